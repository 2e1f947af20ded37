"""Authoring format: a percent-format ``.py`` file per assignment, turned into the nbgrader source notebook.

Cells start with a marker line ``# %% KIND key=value ...``:

- ``# %% markdown`` — markdown; each line's leading ``# `` is removed;
- ``# %%`` or ``# %% code`` — an ordinary code cell (explore, demo, "on your Spark");
- ``# %% setup id=ID`` — a read-only (locked) code cell;
- ``# %% solution id=ID`` — an autograded answer cell (``### BEGIN SOLUTION`` … ``### END SOLUTION`` inside);
- ``# %% tests id=ID points=N`` — a locked autograder test cell (``### BEGIN HIDDEN TESTS`` … inside).

Plain text keeps diffs readable and review easy; ``sparkcourse author`` writes ``source/NN/NN.ipynb``
and a test proves the notebooks are in sync with their authoring files.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat

KINDS = ("markdown", "code", "setup", "solution", "tests")
_MARKER = re.compile(r"^# %%(?:\s+(.*))?$")
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_HIDDEN = re.compile(re.escape(BEGIN_HIDDEN) + r".*?(" + re.escape(END_HIDDEN) + r"|\Z)", re.S)


def strip_hidden(source: str) -> str:
    """Remove every hidden-test block (markers included) from a cell's source."""
    return _HIDDEN.sub("# (hidden tests ran here)", source)


class AuthoringError(ValueError):
    """A malformed authoring file."""


def _parse_marker(text: str, where: str) -> tuple[str, dict[str, str]]:
    parts = shlex.split(text or "")
    kind = parts[0] if parts and "=" not in parts[0] else "code"
    opts = dict(p.split("=", 1) for p in parts if "=" in p)
    if kind not in KINDS:
        raise AuthoringError(f"{where}: unknown cell kind {kind!r}; expected one of {KINDS}")
    if kind in ("setup", "solution", "tests") and "id" not in opts:
        raise AuthoringError(f"{where}: a {kind} cell needs id=...")
    if kind == "tests" and "points" not in opts:
        raise AuthoringError(f"{where}: a tests cell needs points=N")
    return kind, opts


def _strip_markdown(lines: list[str]) -> str:
    out = []
    for line in lines:
        if line.startswith("# "):
            out.append(line[2:])
        elif line.rstrip() == "#":
            out.append("")
        else:
            out.append(line)
    return "\n".join(out).strip("\n")


def parse(text: str, name: str = "<authoring>") -> nbformat.NotebookNode:
    """Turn authoring text into an nbgrader source notebook (no outputs, deterministic cell ids)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    blocks: list[tuple[str, dict[str, str], list[str], int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line)
        if m:
            kind, opts = _parse_marker(m.group(1), f"{name}:{lineno}")
            blocks.append((kind, opts, [], lineno))
        elif blocks:
            blocks[-1][2].append(line)
        elif line.strip():
            raise AuthoringError(f"{name}:{lineno}: text before the first '# %%' marker")
    seen: set[str] = set()
    for i, (kind, opts, lines, lineno) in enumerate(blocks):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(_strip_markdown(lines))
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines).strip("\n"))
        cell.id = f"c{i:03d}"
        if kind in ("setup", "solution", "tests"):
            gid = opts["id"]
            if gid in seen:
                raise AuthoringError(f"{name}:{lineno}: duplicate id {gid!r}")
            seen.add(gid)
            cell.id = gid.replace("_", "-")
            meta = {"grade_id": gid, "schema_version": 3, "locked": kind != "solution",
                    "solution": kind == "solution", "grade": kind == "tests"}
            if kind == "tests":
                meta["points"] = int(opts["points"])
            cell.metadata["nbgrader"] = meta
            if kind == "solution" and "### BEGIN SOLUTION" not in cell.source:
                raise AuthoringError(f"{name}:{lineno}: solution cell {gid!r} has no ### BEGIN SOLUTION")
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(authoring_file: Path) -> str:
    """The source notebook JSON for one authoring file."""
    nb = parse(authoring_file.read_text(), str(authoring_file.name))
    return nbformat.writes(nb) + "\n"


def write_sources(root: Path) -> list[Path]:
    """Write ``source/NN/NN.ipynb`` for every ``authoring/NN.py``; returns the notebooks written."""
    written = []
    for src in sorted((root / "authoring").glob("*.py")):
        target = root / "source" / src.stem / f"{src.stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(src))
        written.append(target)
    return written
