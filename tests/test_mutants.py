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

The harness (tests/nbharness.py) runs on ``os.cpu_count() + 1`` workers, each driving one subprocess with one
OpenMP thread: every selected week is queued at once, a worker whose week is done helps the week with the most work
left (when that outweighs starting another subprocess), and a test waits only for its own week. Only the weeks
whose tests are selected run (``pytest tests/test_mutants.py -k 03-peft``); ``-m "not mutants"`` skips them all.
A mutant's run stops after the last test it names, and starts where its cell does: a subprocess receives its week's
scenarios in notebook order, runs the unmodified cells before a scenario's cell once and forks the scenario from
there (``nbharness.Prefix``).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from conftest import ASSIGNMENTS, ROOT

from sparkcourse.grader.authoring import AuthoringError, Block, Kind, split_blocks, unique

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


# ---- running the harness: os.cpu_count() + 1 workers, each driving one subprocess --------------------------

HARNESS = ROOT / "tests" / "nbharness.py"
SCENARIO_TIMEOUT = 600  # seconds
# one OpenMP thread per harness subprocess: more of them than cores share the cores, and torch's default pool per
# subprocess would oversubscribe them (spinning OpenMP threads slow everything several times over)
# one more subprocess than cores: the weeks start one per worker, and the one with most work (week 01's simulator)
# would otherwise run on one core until the others are done and can help it
HARNESS_WORKERS = (os.cpu_count() or 1) + 1
HARNESS_ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@dataclass
class WeekRun:
    """One week's scenarios: those waiting, the outcomes so far, how many workers serve it and how long a
    subprocess takes to start (its first answer) and to answer (the others)."""

    mutants: list[Mutant]
    spec: Path | None
    pending: list[str]
    total: int
    results: dict[str, dict[str, bool]] = field(default_factory=dict)
    serving: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    startup: float = 0.0
    times: list[float] = field(default_factory=list)

    def worth_helping(self) -> bool:
        """Whether one more subprocess would save time: the work left per worker exceeds its start-up."""
        if not self.pending or not self.times:
            return False
        return len(self.pending) * self.per_scenario() / (self.serving + 1) > self.startup

    def per_scenario(self) -> float:
        """Expected seconds per waiting scenario: the mean so far or, when higher, the latest (a mutant's run stops
        after its tests, so the later a cell stands in the notebook, the longer its mutants take)."""
        return max(sum(self.times) / len(self.times), self.times[-1])

    def record(self, name: str, outcome: dict[str, bool]) -> None:
        self.results[name] = outcome
        if len(self.results) == self.total:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.pending.clear()
        self.done.set()


class Harness:
    """Runs the selected weeks' scenarios on ``HARNESS_WORKERS`` workers, each driving one harness subprocess at a
    time (``nbharness.py --serve``: the week's imports stay loaded between scenarios). A worker stays with its week
    until no scenario of it waits, then takes a week nobody serves yet or, when there is none, helps the week with
    the most work left, when that work per worker outweighs a new subprocess's start-up (week 01's simulator would
    otherwise run on one core while the others idle). A test waits only for its own week."""

    def __init__(self, tmp: Path):
        self.tmp, self.cond, self.closed = tmp, threading.Condition(), False
        self.weeks: dict[str, WeekRun] = {}
        self.procs: set[subprocess.Popen] = set()
        self.threads = [threading.Thread(target=self._work, name=f"mutants-{i}", daemon=True)
                        for i in range(HARNESS_WORKERS)]
        for t in self.threads:
            t.start()

    def start(self, weeks) -> None:
        with self.cond:
            for a in weeks:
                if a in self.weeks:
                    continue
                try:
                    mutants, sources = mutant_sources(a)
                except (AuthoringError, OSError) as exc:  # reported by that week's tests, not by the fixture
                    self.weeks[a] = WeekRun([], None, [], 0)
                    self.weeks[a].fail(exc)
                    continue
                scenarios = {"reference": {}} | {m.name: {"replace": {m.cell: sources[m.name]}, "until": m.fails}
                                                 for m in mutants}
                spec = self.tmp / f"{a}.json"
                spec.write_text(json.dumps(scenarios))
                # in notebook order of the cell each replaces, the reference last: a harness subprocess runs the
                # unmodified cells before a scenario's cell once and forks from there (nbharness.Prefix)
                order = {gid: i for i, gid in enumerate(answer_cells(a))}
                by_cell = {m.name: order.get(m.cell, len(order)) for m in mutants}
                pending = sorted(scenarios, key=lambda n: by_cell.get(n, len(order) + 1))
                self.weeks[a] = WeekRun(mutants, spec, pending, len(scenarios))
            self.cond.notify_all()

    def result(self, a: str) -> tuple[list[Mutant], dict[str, dict[str, bool]]]:
        self.start([a])
        run = self.weeks[a]
        run.done.wait()
        if run.error is not None:
            raise run.error
        return run.mutants, run.results

    def _take(self, week: str | None) -> tuple[str, str] | None:
        """Under the lock: the next (week, scenario) for a worker now serving ``week``."""
        if week is None or not self.weeks[week].pending:
            unserved = [a for a, r in self.weeks.items() if r.pending and not r.serving]
            helpable = [a for a, r in self.weeks.items() if r.worth_helping()]
            week = unserved[0] if unserved else max(
                helpable, key=lambda a: len(self.weeks[a].pending) * self.weeks[a].per_scenario(), default=None)
            if week is None:
                return None
        return week, self.weeks[week].pending.pop(0)

    def _work(self) -> None:
        week: str | None = None
        proc: subprocess.Popen | None = None
        while True:
            with self.cond:
                job = None if self.closed else self._take(week)
                if job is None or job[0] != week:
                    if week is not None:
                        self.weeks[week].serving -= 1
                    week = job[0] if job else None
                    if week is not None:
                        self.weeks[week].serving += 1
                    old, proc = proc, None
                else:
                    old = None
            if old is not None:
                self._stop(old)
            if job is None:
                with self.cond:
                    if self.closed:
                        return
                    self.cond.wait(1.0)
                continue
            name, run = job[1], self.weeks[job[0]]
            try:
                fresh, t0 = proc is None, time.monotonic()
                if fresh:
                    proc = self._spawn(job[0], run.spec)
                outcome = self._ask(proc, name)
                took = time.monotonic() - t0
            except Exception as exc:  # the subprocess died, hung or answered nonsense: its week fails
                log = self._stop(proc, kill=True) if proc is not None else ""
                proc = None
                with self.cond:
                    run.fail(AssertionError(f"{job[0]}: the harness failed on {name}: {exc}\n{log}"))
                continue
            with self.cond:
                run.record(name, outcome)
                if fresh:
                    run.startup = max(run.startup, took)
                else:
                    run.times.append(took)

    def _spawn(self, a: str, spec: Path) -> subprocess.Popen:
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([sys.executable, str(HARNESS), "--serve", str(ROOT / "source" / a / f"{a}.ipynb"),
                                 str(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True, cwd=ROOT, env=HARNESS_ENV)
        proc.log = log  # type: ignore[attr-defined]
        with self.cond:
            self.procs.add(proc)
        return proc

    @staticmethod
    def _ask(proc: subprocess.Popen, name: str) -> dict[str, bool]:
        proc.stdin.write(name + "\n")
        proc.stdin.flush()
        if not select.select([proc.stdout], [], [], SCENARIO_TIMEOUT)[0]:
            raise TimeoutError(f"no answer after {SCENARIO_TIMEOUT} s")
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the harness exited with {proc.wait()}")
        return json.loads(line)[name]

    def _stop(self, proc: subprocess.Popen, kill: bool = False) -> str:
        """End a subprocess (closing its stdin lets it finish); returns the end of what it wrote to stderr."""
        try:
            if not kill:
                proc.stdin.close()
                proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            kill = True
        if kill:
            proc.kill()
            proc.wait()
        with self.cond:
            self.procs.discard(proc)
        proc.log.seek(0)
        tail = proc.log.read()[-3000:]
        proc.log.close()
        return tail

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            procs = list(self.procs)
        for proc in procs:
            proc.kill()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture(scope="module")
def harness(request, tmp_path_factory):
    """Queues every week whose harness tests were selected, all at once; -k 03-peft runs one week."""
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
                          "replace <<<\n===\nb\n>>>": "nothing to replace", "remove a": "expected",
                          "delete  ": "say which line", "# only a note": "replaces nothing"}.items():
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
