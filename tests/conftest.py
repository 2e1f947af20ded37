"""Shared fixtures: a throw-away copy of the course, built and graded once per test session, and the lanes.

Lanes: ``-m "not grading and not hostile and not mutants and not slow"`` is the fast lane (README); the full lane
runs everything. ``--week 03-peft`` keeps only one week's tests (its id or module name in the test's id)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkcourse import weeks
from sparkcourse.grader import course

ROOT = Path(__file__).resolve().parents[1]
WEEKS = weeks.ready(weeks.registry_for(ROOT))
ASSIGNMENTS = [w.id for w in WEEKS]


def pytest_addoption(parser):
    parser.addoption("--week", action="append", default=[], help="only this week's tests (NN-topic; repeatable)")


def pytest_collection_modifyitems(config, items):
    wanted = [weeks.get(w, weeks.registry_for(ROOT)) for w in config.getoption("--week")]
    if not wanted:
        return
    keep = [i for i in items if any(w.id in i.nodeid or w.module in i.nodeid for w in wanted)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BLANK = "blank"  # every sample class has the untouched release under this name: every graded cell must fail


@dataclass
class GradedCourse:
    """A course copy after build, sample class, grading, feedback and report."""

    root: Path
    build: list
    grade: list
    feedback: list
    table: course.GradeTable

    def cell_scores(self, assignment: str, student: str) -> dict[str, tuple[float, float]]:
        """grade_id -> (score, max) for one graded submission."""
        return course.cell_scores(self.root, assignment, student)

    def solution_scores(self, assignment: str) -> dict[str, tuple[float, float]]:
        """grade_id -> (score, max) of the source notebook, graded by the grader's pre-flight."""
        return {k: tuple(v) for k, v in read_json(self.root / "reports" / "preflight.json")[assignment]["scores"].items()}


@pytest.fixture(scope="session")
def graded_course(tmp_path_factory) -> GradedCourse:
    """The one class run: build the release in a copy of the course, write the sample class, grade it (the
    pre-flight grades every source notebook too), feedback and report. Every grading test reads this run."""
    root = tmp_path_factory.mktemp("course")
    build = course.copy_course(ROOT, root)
    assert all(r.ok for r in build), [r.message for r in build if not r.ok]
    grade = course.grade(root, progress=False)
    fb = course.feedback(root)
    table = course.report(root, show=False)
    return GradedCourse(root, build, grade, fb, table)


def read_json(path: Path):
    """Load a JSON file."""
    return json.loads(path.read_text())


def secret_lines(a: str) -> set[str]:
    """Hidden-test lines of week ``a`` (over 25 characters) that occur nowhere in its release: feedback must show
    none of them. A hidden line inside a visible one (the same code with a trailing comment) counts as visible."""
    import nbformat

    hidden: set[str] = set()
    for c in nbformat.read(ROOT / "source" / a / f"{a}.ipynb", as_version=4).cells:
        for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", c.source, re.S):
            hidden |= {ln.strip() for ln in block.splitlines() if len(ln.strip()) > 25}
    visible = "\n".join(c.source for c in nbformat.read(ROOT / "release" / a / f"{a}.ipynb", as_version=4).cells)
    return {h for h in hidden if h not in visible}
