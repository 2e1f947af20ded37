"""Shared fixtures: a throw-away copy of the course, built and graded once per test session."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkcourse.grader import course

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = course.assignments(ROOT)
COURSE_FILES = ("nbgrader_config.py", "source", "sample_class", "authoring")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Two extra submissions per assignment: the source notebook itself (every test must pass) and the
# untouched release (every graded cell must fail on the stub).
SOLUTION, UNTOUCHED = "zz_solution", "zz_untouched"


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
        from nbgrader.api import Gradebook

        with Gradebook("sqlite:///" + str(self.root / "gradebook.db")) as gb:
            sub = gb.find_submission(assignment, student)
            return {g.name: (g.score, g.max_score) for nb in sub.notebooks for g in nb.grades}


@pytest.fixture(scope="session")
def graded_course(tmp_path_factory) -> GradedCourse:
    """Build the release in a copy of the course, write the sample class plus solution/untouched copies, grade."""
    root = tmp_path_factory.mktemp("course")
    for name in COURSE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        elif src.exists():
            shutil.copy2(src, root / name)
    build = course.build(root)
    assert all(r.ok for r in build), [r.message for r in build if not r.ok]
    course.make_sample_class(root)
    for a in ASSIGNMENTS:
        for student, nb in ((SOLUTION, root / "source" / a / f"{a}.ipynb"),
                            (UNTOUCHED, root / "release" / a / f"{a}.ipynb")):
            target = root / "submitted" / student / a
            target.mkdir(parents=True)
            shutil.copy2(nb, target / nb.name)
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
