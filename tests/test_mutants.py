"""Plausible mistakes must fail their tests; the reference solution and correct variants must pass.

Each week keeps its mutants in tests/mutants/NN-topic.py (``#`` comments may come before the first block).

A *mutant* is a small patch of one answer cell and the test cells it must fail::

    # %% mutant name=NAME cell=GRADE_ID fails=TEST_ID[,TEST_ID]
    replace OLD => NEW
    delete LINE
    replace <<<
    OLD LINES
    ===
    NEW LINES
    >>>

- ``replace OLD => NEW`` (one line) replaces a fragment of one line: OLD is everything between ``replace `` and
  the line's only `` => ``, NEW everything after it (a line holding `` => `` twice needs the block form);
- ``delete LINE`` removes the one line that reads LINE, indentation aside;
- ``replace <<<`` … ``===`` … ``>>>`` replaces whole lines: OLD LINES (one or more, indentation included) by
  NEW LINES (none deletes them). A line that is exactly ``===`` or ``>>>`` cannot be part of OLD or NEW;
- a mutant has one or more of these, applied in order; blank lines and ``#`` notes may stand between them.

Patches apply to the *solved cell*: the answer cell of the source notebook (``source/NN/NN.ipynb``, made from
``authoring/NN.py``) with its ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines removed — what a student
who wrote the reference solution hands in. OLD (or LINE) must occur exactly once in the text it is applied to (a
fragment anywhere, lines as a run of whole lines): missing or repeated, the patch fails with its file and
line, so a mutant never silently stops testing anything when the solution changes.

A *variant* is a correct answer written differently, which must pass every test; it is a whole cell::

    # %% variant name=NAME cell=GRADE_ID
    <the whole source of that answer cell>

The harness (tests/nbharness.py) runs each week in its own subprocess, ``os.cpu_count()`` weeks at a time; only
the weeks whose tests are selected run (``pytest tests/test_mutants.py -k 03-peft``), and ``-m "not mutants"``
skips them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from conftest import ASSIGNMENTS, ROOT

from sparkcourse.grading.authoring import AuthoringError, Block, Kind, split_blocks, unique

pytestmark = pytest.mark.mutants

MUTANT_FILES = {a: ROOT / "tests" / "mutants" / f"{a}.py" for a in ASSIGNMENTS}
MUTANT_KINDS = {"mutant": Kind(("name", "cell", "fails")), "variant": Kind(("name", "cell"))}
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
OPEN, SEP, CLOSE, ARROW, DELETE = "replace <<<", "===", ">>>", " => ", "delete "


class PatchError(AuthoringError):
    """A mutant that cannot be read or applied (the message starts with ``file:line``)."""


@dataclass
class Replace:
    """One replacement: a fragment of a line (``how="fragment"``), a run of whole lines (``"lines"``) or the one
    line whose text, indentation aside, is ``old`` (``"line"``, deleted: ``new`` is empty)."""

    old: str
    new: str
    how: str
    where: str


@dataclass
class Mutant:
    name: str
    cell: str
    fails: list[str]
    where: str
    patch: list[Replace] = field(default_factory=list)  # a mutant
    whole: str | None = None  # a variant


def parse_patch(block: Block) -> list[Replace]:
    """The replacements in the body of a ``# %% mutant`` block."""
    ops: list[Replace] = []
    lines, i = block.lines, 0
    while i < len(lines):
        line, where = lines[i], f"{block.name}:{block.lineno + 1 + i}"
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
        elif line.rstrip() == OPEN:
            try:
                sep = lines.index(SEP, i + 1)
                close = lines.index(CLOSE, sep + 1)
            except ValueError:
                raise PatchError(f"{where}: '{OPEN}' needs a line '{SEP}' and then a line '{CLOSE}'") from None
            old, new = lines[i + 1:sep], lines[sep + 1:close]
            if not old:
                raise PatchError(f"{where}: nothing to replace between '{OPEN}' and '{SEP}'")
            if SEP in new:
                raise PatchError(f"{where}: a second '{SEP}' before '{CLOSE}'")
            ops.append(Replace("\n".join(old), "\n".join(new), "lines", where))
            i = close + 1
        elif line.startswith("replace "):
            rest = line[len("replace "):]
            if rest.count(ARROW) != 1:
                raise PatchError(f"{where}: a one-line replace needs '{ARROW.strip()}' exactly once "
                                 f"(found {rest.count(ARROW)}); use '{OPEN}' ... '{SEP}' ... '{CLOSE}'")
            old, new = rest.split(ARROW)
            if not old:
                raise PatchError(f"{where}: nothing to replace")
            ops.append(Replace(old, new, "fragment", where))
            i += 1
        elif line.startswith(DELETE):
            old = line[len(DELETE):].strip()
            if not old:
                raise PatchError(f"{where}: say which line to delete (a blank one needs '{OPEN}' and context)")
            ops.append(Replace(old, "", "line", where))
            i += 1
        else:
            raise PatchError(f"{where}: expected 'replace OLD{ARROW}NEW', 'delete LINE' or '{OPEN}', not {line!r}")
    if not ops:
        raise PatchError(f"{block.where}: mutant {block.opts['name']!r} replaces nothing")
    return ops


def _find(text: str, op: Replace) -> list[tuple[int, int]]:
    """Every (start, end) of ``op.old`` in ``text``, overlapping ones included, as ``op.how`` matches it."""
    if op.how == "line":
        hits, start = [], 0
        for line in text.split("\n"):
            if line.strip() == op.old:
                hits.append((start, start + len(line)))
            start += len(line) + 1
        return hits
    hits, start = [], text.find(op.old)
    while start >= 0:
        end = start + len(op.old)
        if op.how == "fragment" or ((start == 0 or text[start - 1] == "\n") and (end == len(text) or text[end] == "\n")):
            hits.append((start, end))
        start = text.find(op.old, start + 1)
    return hits


def apply_patch(text: str, patch: list[Replace], cell: str = "the cell") -> str:
    """``text`` with each replacement made in turn; OLD missing or found twice is a :class:`PatchError`."""
    for op in patch:
        hits = _find(text, op)
        if len(hits) != 1:
            found = "is not in" if not hits else f"occurs {len(hits)} times in"
            raise PatchError(f"{op.where}: the text to replace {found} {cell} (as patched so far):\n{op.old}")
        start, end = hits[0]
        if op.how != "fragment" and not op.new:  # remove the lines themselves, not just their text
            start, end = (start - 1, end) if start else (start, min(end + 1, len(text)))
        text = text[:start] + op.new + text[end:]
    return text


def solved_cell(source: str) -> str:
    """An answer cell as a student who wrote the reference solution hands it in: no solution marker lines."""
    return "\n".join(ln for ln in source.splitlines() if ln.strip() not in SOLUTION_MARKERS)


def parse_mutants(text: str, name: str = "<mutants>") -> list[Mutant]:
    """The mutants and variants of one file, patches read but not applied."""
    out = []
    for b in unique(split_blocks(text, MUTANT_KINDS, name, preamble=True), "name").values():
        fails = [t for t in b.opts.get("fails", "").split(",") if t]
        if b.kind == "mutant":
            if not fails:
                raise PatchError(f"{b.where}: a mutant names the tests it fails; a correct answer is a variant")
            out.append(Mutant(b.opts["name"], b.opts["cell"], fails, b.where, patch=parse_patch(b)))
        else:
            out.append(Mutant(b.opts["name"], b.opts["cell"], [], b.where, whole=b.text))
    return out


def answer_cells(a: str) -> dict[str, str]:
    """grade_id -> source of week ``a``'s answer cells in its source notebook."""
    cells = nbformat.read(ROOT / "source" / a / f"{a}.ipynb", as_version=4).cells
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def mutant_sources(a: str) -> tuple[list[Mutant], dict[str, str]]:
    """Week ``a``'s mutants and, for each, the whole source of the answer cell it stands for."""
    path = MUTANT_FILES[a]
    mutants, cells = parse_mutants(path.read_text(), f"tests/mutants/{path.name}"), answer_cells(a)
    sources = {}
    for m in mutants:
        if m.cell not in cells:
            raise PatchError(f"{m.where}: {a} has no answer cell {m.cell!r}")
        sources[m.name] = m.whole if m.whole is not None else apply_patch(
            solved_cell(cells[m.cell]), m.patch, f"cell {m.cell!r}")
    return mutants, sources


# ---- running the harness: one subprocess per week, os.cpu_count() at a time --------------------------------

class Harness:
    """Runs each week's harness once, in the background; a test waits only for its own week."""

    def __init__(self, tmp: Path):
        self.tmp, self.pool = tmp, ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="mutants")
        self.futures: dict[str, Future] = {}
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def start(self, weeks) -> None:
        with self.lock:
            for a in weeks:
                if a not in self.futures:
                    self.futures[a] = self.pool.submit(self._run, a)

    def result(self, a: str) -> tuple[list[Mutant], dict[str, dict[str, bool]]]:
        self.start([a])
        return self.futures[a].result()

    def _run(self, a: str):
        mutants, sources = mutant_sources(a)
        scenarios = {"reference": {}} | {m.name: {"replace": {m.cell: sources[m.name]}, "until": m.fails}
                                         for m in mutants}
        spec = self.tmp / f"{a}.json"
        spec.write_text(json.dumps(scenarios))
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "nbharness.py"),
                                 str(ROOT / "source" / a / f"{a}.ipynb"), str(spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        with self.lock:
            self.procs.append(proc)
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{a}: the harness ran past 900 s\n{err[-3000:]}") from None
        assert proc.returncode == 0, f"{a}: the harness exited with {proc.returncode}\n{err[-3000:]}"
        return mutants, json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def harness(request, tmp_path_factory):
    """Starts the harness of every week whose tests were selected, all at once; -k 03-peft runs one week."""
    h = Harness(tmp_path_factory.mktemp("mutants"))
    h.start(dict.fromkeys(item.callspec.params["a"] for item in request.session.items
                          if "harness" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")))
    yield h
    h.close()


def test_patches_fail_loudly():
    block = split_blocks("# %% mutant name=m cell=c fails=t\nreplace x = 1 => x = 2\nreplace <<<\n  y\n===\n>>>\n"
                         "# a note\n\ndelete return z\n", MUTANT_KINDS, "m.py")[0]
    patch = parse_patch(block)
    assert apply_patch("x = 1\nif x:\n  y\n  return z\nz", patch) == "x = 2\nif x:\nz"
    with pytest.raises(PatchError, match="m.py:9: the text to replace occurs 2 times in"):
        apply_patch("x = 1\n  y\nreturn z\n  return z", patch)
    with pytest.raises(PatchError, match="m.py:2: the text to replace is not in"):
        apply_patch("x = 3\n  y", patch)
    with pytest.raises(PatchError, match="m.py:2: the text to replace occurs 2 times in"):
        apply_patch("x = 1\nx = 1\n  y", patch)
    with pytest.raises(PatchError, match="m.py:3: the text to replace is not in"):
        apply_patch("x = 1\n  yy", patch)  # lines match whole lines only
    for body, message in {"replace a => b => c": "exactly once", "replace <<<\na\n===\nb\n": "needs a line",
                          "replace <<<\n===\nb\n>>>": "nothing to replace", "remove a": "expected", "delete  ": "say which line",
                          "# only a note": "replaces nothing"}.items():
        with pytest.raises(PatchError, match=message):
            parse_patch(split_blocks("# %% mutant name=m cell=c fails=t\n" + body, MUTANT_KINDS, "m.py")[0])
    with pytest.raises(PatchError, match="is a variant"):
        parse_mutants("# %% mutant name=m cell=c fails=\nreplace a => b\n")


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_every_week_has_mutants_that_apply(a):
    assert MUTANT_FILES[a].exists(), f"tests/mutants/{a}.py is missing"
    mutants, sources = mutant_sources(a)
    assert len([m for m in mutants if m.fails]) >= 5, f"{a}: keep at least 5 plausible mistakes"
    cells = answer_cells(a)
    unchanged = [m.name for m in mutants if m.fails and sources[m.name] == solved_cell(cells[m.cell])]
    assert not unchanged, f"{a}: mutants that change nothing: {unchanged}"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_reference_passes_in_harness(harness, a):
    _, results = harness.result(a)
    failed = [t for t, ok in results["reference"].items() if not ok]
    assert not failed, f"{a}: the reference fails {failed} in the harness"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_mutants_are_caught_and_variants_pass(harness, a):
    mutants, results = harness.result(a)
    problems = []
    for m in mutants:
        got = results[m.name]
        unknown = [t for t in m.fails if t not in got]
        if unknown:
            problems.append(f"{m.name}: unknown test ids {unknown}")
        elif m.fails:
            survived = [t for t in m.fails if got[t]]
            if survived:
                problems.append(f"mutant {m.name} survives {survived}")
        else:
            failed = [t for t, ok in got.items() if not ok]
            if failed:
                problems.append(f"correct variant {m.name} fails {failed}")
    assert not problems, f"{a}:\n" + "\n".join(problems)
