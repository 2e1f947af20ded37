"""Authoring format: a percent-format ``.py`` file per assignment, turned into the nbgrader source notebook.

Cells start with a marker line ``# %% KIND key=value ...``:

- ``# %% markdown`` — markdown; each line's leading ``# `` is removed;
- ``# %%`` or ``# %% code`` — an ordinary code cell (explore, demo, "on your Spark");
- ``# %% setup id=ID`` — a read-only (locked) code cell;
- ``# %% solution id=ID`` — an autograded answer cell (``### BEGIN SOLUTION`` … ``### END SOLUTION`` inside);
- ``# %% tests id=ID points=N`` — a locked autograder test cell (``### BEGIN HIDDEN TESTS`` … inside).

Plain text keeps diffs readable and review easy; ``sparkcourse author`` writes ``source/NN/NN.ipynb``
and a test proves the notebooks are in sync with their authoring files.

The same ``# %% KIND key=value ...`` block format, split by :func:`split_blocks`, carries the sample class's
answers (``sample_class/NN/STUDENT.py`` and ``tests/hostile/*.py``: ``# %% answer id=GRADE_ID``, read by
:func:`read_answers`) and the mutants (``tests/mutants/NN.py``: ``# %% mutant`` and ``# %% variant``, see
``tests/test_mutants.py``). Each format names its kinds and their options; a marker with an unknown kind, an
unknown or repeated option, a missing option or a word that is not ``key=value`` is an error that names the
file and line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nbformat is imported where a notebook is made: the grading kernel imports this module for
    import nbformat  # BEGIN_HIDDEN/strip_hidden, and nbformat (jsonschema) costs it seconds of start-up

_MARKER = re.compile(r"^# %%(?:\s+(.*))?$")
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_HIDDEN = re.compile(re.escape(BEGIN_HIDDEN) + r".*?(" + re.escape(END_HIDDEN) + r"|\Z)", re.S)


def strip_hidden(source: str) -> str:
    """Remove every hidden-test block (markers included) from a cell's source."""
    return _HIDDEN.sub("# (hidden tests ran here)", source)


class AuthoringError(ValueError):
    """A malformed block file: authoring, answers or mutants (the message starts with ``file:line``)."""


@dataclass(frozen=True)
class Kind:
    """A block kind of one format: the options its marker must have and those it may have."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclass
class Block:
    """One ``# %% KIND key=value ...`` block: its kind, options, body lines and the marker's line number."""

    kind: str
    opts: dict[str, str]
    lines: list[str]
    lineno: int
    name: str = "<text>"

    @property
    def where(self) -> str:
        """``file:line`` of the marker, for error messages."""
        return f"{self.name}:{self.lineno}"

    @property
    def text(self) -> str:
        """The body as one string, blank lines at either end removed."""
        return "\n".join(self.lines).strip("\n")


def _parse_marker(rest: str | None, kinds: Mapping[str, Kind], default_kind: str | None,
                  where: str) -> tuple[str, dict[str, str]]:
    try:
        parts = shlex.split(rest or "")
    except ValueError as exc:
        raise AuthoringError(f"{where}: cannot read the marker ({exc})") from None
    if parts and "=" not in parts[0]:
        kind, parts = parts[0], parts[1:]
    elif default_kind is not None:
        kind = default_kind
    else:
        raise AuthoringError(f"{where}: a marker needs a kind: '# %% KIND key=value ...'")
    if kind not in kinds:
        raise AuthoringError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(kinds)}")
    spec = kinds[kind]
    opts: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise AuthoringError(f"{where}: {part!r} is not key=value")
        if key in opts:
            raise AuthoringError(f"{where}: option {key!r} given twice")
        if key not in spec.required + spec.optional:
            allowed = ", ".join(spec.required + spec.optional) or "none"
            raise AuthoringError(f"{where}: '# %% {kind}' has no option {key!r} (options: {allowed})")
        opts[key] = value
    for key in spec.required:
        if key not in opts:
            raise AuthoringError(f"{where}: '# %% {kind}' needs {key}=...")
    return kind, opts


def split_blocks(text: str, kinds: Mapping[str, Kind], name: str = "<text>", *,
                 default_kind: str | None = None, preamble: bool = False) -> list[Block]:
    """Split ``text`` at its ``# %% KIND key=value ...`` marker lines into blocks.

    ``kinds`` maps each allowed kind to its options; a bare ``# %%`` (or one whose first word is an option)
    gets ``default_kind``, or is an error without one. Before the first marker only blank lines may stand, and
    ``#`` comments too with ``preamble=True``. Errors are :class:`AuthoringError` with ``name:line``.
    """
    blocks: list[Block] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line)
        if m:
            kind, opts = _parse_marker(m.group(1), kinds, default_kind, f"{name}:{lineno}")
            blocks.append(Block(kind, opts, [], lineno, name))
        elif blocks:
            blocks[-1].lines.append(line)
        elif line.strip() and not (preamble and line.lstrip().startswith("#")):
            raise AuthoringError(f"{name}:{lineno}: text before the first '# %%' marker")
    return blocks


def unique(blocks: list[Block], option: str) -> dict[str, Block]:
    """``blocks`` by the value of ``option``; a value used twice is an error at its second block."""
    out: dict[str, Block] = {}
    for b in blocks:
        if b.opts[option] in out:
            raise AuthoringError(f"{b.where}: duplicate {option} {b.opts[option]!r}")
        out[b.opts[option]] = b
    return out


# ---- the formats ------------------------------------------------------------------------------------

NOTEBOOK_KINDS = {"markdown": Kind(), "code": Kind(), "setup": Kind(("id",)), "solution": Kind(("id",)),
                  "tests": Kind(("id", "points"))}
ANSWER_KINDS = {"answer": Kind(("id",))}


def answers(text: str, name: str = "<answers>") -> dict[str, str]:
    """grade_id -> source of the ``# %% answer id=GRADE_ID`` blocks (``#`` comments may precede the first)."""
    return {gid: b.text for gid, b in unique(split_blocks(text, ANSWER_KINDS, name, preamble=True), "id").items()}


def read_answers(path: Path) -> dict[str, str]:
    """The answer cells of a sample student (``sample_class/NN/STUDENT.py``) or a hostile one."""
    return answers(path.read_text(), path.name)


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
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    seen: set[str] = set()
    for i, blk in enumerate(split_blocks(text, NOTEBOOK_KINDS, name, default_kind="code")):
        kind, opts = blk.kind, blk.opts
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(_strip_markdown(blk.lines))
        else:
            cell = nbformat.v4.new_code_cell(blk.text)
        cell.id = f"c{i:03d}"
        if kind in ("setup", "solution", "tests"):
            gid = opts["id"]
            if gid in seen:
                raise AuthoringError(f"{blk.where}: duplicate id {gid!r}")
            seen.add(gid)
            cell.id = gid.replace("_", "-")
            meta = {"grade_id": gid, "schema_version": 3, "locked": kind != "solution",
                    "solution": kind == "solution", "grade": kind == "tests"}
            if kind == "tests":
                if not opts["points"].isdigit():
                    raise AuthoringError(f"{blk.where}: points={opts['points']!r} is not a whole number")
                meta["points"] = int(opts["points"])
            cell.metadata["nbgrader"] = meta
            if kind == "solution" and "### BEGIN SOLUTION" not in cell.source:
                raise AuthoringError(f"{blk.where}: solution cell {gid!r} has no ### BEGIN SOLUTION")
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(authoring_file: Path) -> str:
    """The source notebook JSON for one authoring file."""
    import nbformat

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
