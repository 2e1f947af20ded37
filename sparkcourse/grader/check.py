"""``sparkcourse check NN-topic``: one week's health, end to end, in a throw-away copy of the course.

Steps: the source notebook is what its authoring file renders; the source is valid (no outputs, unique ids,
hidden tests in every graded cell); the release builds and equals the committed one; the sample class grades to
its expected scores (the pre-flight grades the reference solution to full marks first, and the untouched release
scores 0 in every cell); every mutant is caught and every correct variant passes. A summary table at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from sparkcourse import weeks
from sparkcourse.grader import course


@dataclass
class Step:
    """One step's outcome."""

    week: str
    name: str
    ok: bool
    seconds: float
    detail: str = ""


def _timed(week: str, name: str, fn: Callable[[], str]) -> Step:
    """Run ``fn`` (it returns a detail line, or raises AssertionError with the problem)."""
    t0 = time.perf_counter()
    try:
        detail, ok = fn(), True
    except (AssertionError, course.GradingRefused, ValueError) as exc:
        detail, ok = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__, False
    return Step(week, name, ok, time.perf_counter() - t0, detail)


def in_sync(root: Path, week: weeks.Week) -> str:
    """The committed source notebook is what the authoring file renders."""
    from sparkcourse.grader.authoring import render

    paths = week.paths(root)
    assert paths["source"].read_text() == render(paths["authoring"]), \
        f"source/{week.id} is out of date: run `sparkcourse author`"
    return "source/ matches authoring/"


def source_valid(root: Path, week: weeks.Week) -> str:
    """No outputs, unique grade ids, points on graded cells, solution and hidden-test markers."""
    cells = nbformat.read(week.paths(root)["source"], as_version=4).cells
    meta = [c.metadata.get("nbgrader", {}) for c in cells]
    assert not [c for c in cells if c.cell_type == "code" and (c.outputs or c.execution_count)], "outputs committed"
    ids = [m["grade_id"] for m in meta if "grade_id" in m]
    assert len(ids) == len(set(ids)), "duplicate grade ids"
    graded = [(c, m) for c, m in zip(cells, meta, strict=True) if m.get("grade")]
    assert graded, "no graded cell"
    for c, m in zip(cells, meta, strict=True):
        assert not m.get("grade") or (m.get("points", 0) > 0 and "### BEGIN HIDDEN TESTS" in c.source), \
            f"{m.get('grade_id')}: a graded cell needs points and hidden tests"
        assert not m.get("solution") or "### BEGIN SOLUTION" in c.source, f"{m.get('grade_id')}: no solution block"
    return f"{len(graded)} graded cells, {sum(m['points'] for _, m in graded)} points"


def release_fresh(root: Path, copy: Path, week: weeks.Week) -> str:
    """The release built in the copy equals the committed one."""
    built = json.loads((copy / "release" / week.id / f"{week.id}.ipynb").read_text())
    assert built == json.loads(week.paths(root)["release"].read_text()), \
        f"release/{week.id} is stale: run `sparkcourse build {week.id}` and commit it"
    return "release/ is what build makes"


def sample_class(copy: Path, week: weeks.Week, workers: int | None) -> str:
    """Grade the sample class (after the pre-flight); scores as expected, the blank release 0 in every cell."""
    results = {r.student: r for r in course.grade(copy, [week.id], progress=False, workers=workers)}
    table = course.grade_table(copy)
    spec = course.sample_class_spec(copy, week.id)["students"]
    wrong = []
    for student, want in spec.items():
        got = table.scores.get(student, {}).get(week.id)
        if want.get("kind") == "malformed":
            if results[student].ok:
                wrong.append(f"{student}: malformed but graded")
        elif got is None or abs(got - want["score"]) > 1e-9:
            wrong.append(f"{student}: {got} instead of {want['score']}")
    passing = [k for k, (s, _) in course.cell_scores(copy, week.id, "blank").items() if s]
    assert not passing, f"the untouched release passes {passing}"
    assert not wrong, "; ".join(wrong)
    pre = json.loads((copy / "reports" / "preflight.json").read_text())[week.id]
    return f"reference {sum(s for s, _ in pre['scores'].values()):g} of {sum(m for _, m in pre['scores'].values()):g}; " \
           f"{len(spec)} students as expected"


def mutants(root: Path, week: weeks.Week) -> str:
    """Every mutant fails the tests it names and every variant passes them all: the course's own mutation tests
    (``tests/test_mutants.py``) for this week, run by pytest in a subprocess."""
    import subprocess
    import sys

    text = week.paths(root)["mutants"].read_text()
    killed = len(re.findall(r"^# %% mutant ", text, re.M))
    variants = len(re.findall(r"^# %% variant ", text, re.M))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_mutants.py",
                           "--week", week.id], cwd=root, capture_output=True, text=True, timeout=1800)
    tail = [ln for ln in proc.stdout.splitlines() if ln.strip()][-12:]
    assert proc.returncode == 0, "mutation tests failed: " + " | ".join(ln for ln in tail if "assert" in ln or
                                                                          "FAILED" in ln or "Error" in ln)[:600]
    assert killed >= 5, f"only {killed} mutants: keep at least 5 plausible mistakes"
    return f"{killed} mutants caught, {variants} variants pass"


def check_week(root: Path, week_id: str, workers: int | None = None) -> list[Step]:
    """Every step for one week, in a temporary copy of the course."""
    week = weeks.get(week_id, weeks.registry_for(root))
    missing = [str(p.relative_to(root)) for p in week.paths(root).values() if not p.exists()]
    if missing:
        return [Step(week.id, "files", False, 0.0, "missing " + ", ".join(missing))]
    steps = [_timed(week.id, "authoring", lambda: in_sync(root, week)),
             _timed(week.id, "source", lambda: source_valid(root, week))]
    copy = Path(tempfile.mkdtemp(prefix=f"sparkcourse-check-{week.id}-", dir=_scratch_dir(root)))
    try:
        steps.append(_timed(week.id, "build", lambda: _build(root, copy, week)))
        if steps[-1].ok:
            steps.append(_timed(week.id, "release", lambda: release_fresh(root, copy, week)))
            steps.append(_timed(week.id, "sample class", lambda: sample_class(copy, week, workers)))
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    steps.append(_timed(week.id, "mutants", lambda: mutants(root, week)))
    return steps


def _scratch_dir(root: Path) -> str:
    """Outside /tmp where possible: the grading kernel has a private /tmp (see the threat model)."""
    var_tmp = Path("/var/tmp")
    return str(var_tmp) if var_tmp.is_dir() else tempfile.gettempdir()


def _build(root: Path, copy: Path, week: weeks.Week) -> str:
    failed = [r.message for r in course.copy_course(root, copy, [week.id]) if not r.ok]
    assert not failed, "the release did not build: " + " ".join(failed)[-300:]
    return "release built in a copy of the course"


def check_weeks(root: Path, week_ids: list[str], workers: int | None = None) -> int:
    """Check each week, print the summary table; 0 if every step of every week passed."""
    steps: list[Step] = []
    for wid in week_ids:
        t0 = time.perf_counter()
        week_steps = check_week(root, wid, workers)
        steps += week_steps
        print(f"{wid}: {'ok' if all(s.ok for s in week_steps) else 'FAILED'} ({time.perf_counter() - t0:.0f} s)")
    rows = [("week", "step", "result", "seconds", "detail")]
    rows += [(s.week, s.name, "ok" if s.ok else "FAILED", f"{s.seconds:.1f}", s.detail) for s in steps]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0 if all(s.ok for s in steps) else 1

