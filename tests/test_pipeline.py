"""The class run end to end: sample class scores, feedback without hidden tests, grade table, bundle."""

from __future__ import annotations

import re
import zipfile

import pytest
from conftest import ASSIGNMENTS, BLANK, ROOT, read_json, secret_lines

from sparkcourse.grader import course


def _sample_students(a):
    if not (ROOT / "sample_class" / a / "expected.toml").exists():
        return []
    return [(a, s, spec) for s, spec in course.sample_class_spec(ROOT, a)["students"].items()]


SAMPLE = [x for a in ASSIGNMENTS for x in _sample_students(a)]


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_every_week_has_a_sample_class(a):
    kinds = {spec.get("kind", "answers") for _, _, spec in _sample_students(a)}
    assert {"answers", "blank", "malformed"} <= kinds, f"{a}: the sample class needs answered, blank, malformed"
    assert course.sample_class_spec(ROOT, a)["students"][BLANK].get("kind") == "blank", f"{a}: no '{BLANK}'"
    for s, spec in course.sample_class_spec(ROOT, a)["students"].items():
        assert spec.get("kind", "answers") != "answers" or (ROOT / "sample_class" / a / f"{s}.py").exists()


@pytest.mark.grading
@pytest.mark.parametrize(("a", "student", "spec"), SAMPLE, ids=[f"{a}-{s}" for a, s, _ in SAMPLE])
def test_sample_class_grades_to_expected_scores(graded_course, a, student, spec):
    results = {(r.assignment, r.student): r for r in graded_course.grade}
    r = results[(a, student)]
    if spec.get("kind") == "malformed":
        assert not r.ok and "malformed" in r.message
        assert graded_course.table.scores[student][a] == 0, "a malformed notebook is listed with 0"
        assert any(n.startswith(f"{a}: malformed") for n in graded_course.table.notes[student])
        return
    assert r.ok, r.message
    assert graded_course.table.scores[student][a] == pytest.approx(spec["score"]), (
        f"{a}/{student}: graded {graded_course.table.scores[student][a]}, expected {spec['score']}")


@pytest.mark.grading
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_feedback_shows_no_hidden_tests(graded_course, a):
    import html

    files = list((graded_course.root / "feedback").glob(f"*/{a}/*.html"))
    assert files, f"{a}: no feedback written"
    secret = secret_lines(a)
    assert secret, f"{a}: no hidden-test line to look for"
    for f in files:
        text = html.unescape(re.sub(r"<[^>]+>", "", f.read_text()))
        assert "BEGIN HIDDEN TESTS" not in text
        leaked = [line for line in secret if line in text]
        assert not leaked, f"{f.relative_to(graded_course.root)} shows hidden test lines: {leaked[:3]}"


@pytest.mark.grading
def test_feedback_keeps_the_failure_message(graded_course):
    """Redaction keeps the test's own message, so a student still learns what is wrong."""
    text = (graded_course.root / "feedback" / "bob" / "00-spark-capacity" / "00-spark-capacity.html").read_text()
    assert "bytes, not bits" in text


@pytest.mark.grading
def test_report_files(graded_course):
    root = graded_course.root
    rows = (root / "reports" / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("student,") and rows[0].endswith(",notes") and rows[-1].startswith("(max)")
    assert any(r.startswith("dee,") and "malformed" in r for r in rows), "a malformed submission left the table"
    assert (root / "reports" / "score_histogram.png").stat().st_size > 1000
    log = read_json(root / "reports" / "grade.json")
    assert {r["student"] for r in log} >= {"ada", "blank", "dee"}


def test_bundle_has_no_reference_source_or_hidden_tests(tmp_path):
    path = course.bundle(ROOT, tmp_path / "bundle.zip")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert any(n.startswith("release/") and n.endswith(".ipynb") for n in names)
        assert "sparkcourse/__init__.py" in names
        assert not [n for n in names if "reference" in n.split("/")], "reference solutions in the bundle"
        assert not [n for n in names if "grader" in n.split("/")], "the grader in the bundle"
        assert not [n for n in names if n.startswith(("source/", "authoring/", "sample_class/", "tests/"))]
        assert "sparkcourse/weeks.toml" in names and "benchmarks/fp8_matmul_h200.md" in names
        for n in names:
            if n.endswith(".ipynb"):
                text = zf.read(n).decode()
                assert "BEGIN HIDDEN TESTS" not in text and "### BEGIN SOLUTION" not in text, n


@pytest.mark.grading
def test_a_broken_submission_does_not_stop_the_class(graded_course):
    graded = [r for r in graded_course.grade if r.ok]
    assert len(graded) >= len(graded_course.grade) - sum(1 for _, _, s in SAMPLE if s.get("kind") == "malformed")


def test_bundle_carries_every_file_a_notebook_names(tmp_path):
    """A notebook that tells a student to open or run a repository file ships it (an --out target excepted)."""
    path = course.bundle(ROOT, tmp_path / "bundle.zip")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    for a in ASSIGNMENTS:
        text = (ROOT / "release" / a / f"{a}.ipynb").read_text()
        written = set(re.findall(r"--out\s+([\w./-]+)", text))
        for ref in set(course.REFERENCED.findall(text)) - written:
            target = ROOT / ref
            assert target.exists(), f"{a} names {ref}, which the repository lacks"
            if target.is_file() and "grader" not in target.parts and "reference" not in target.parts:
                assert ref in names, f"{a} names {ref}, which the student bundle lacks"


def test_refusal_names_the_cause_not_nbgrader_s_last_log_line():
    """A pre-flight that fails before any cell runs is refused with the exception that stopped it."""
    from sparkcourse.grader.course import failure_cause

    log = ("Traceback (most recent call last):\n  File \"api.py\", line 1549, in find_assignment\n"
           "    sqlalchemy.exc.NoResultFound: No row was found when one was required\n"
           "    nbgrader.converters.base.NbGraderException: No assignment with ID 'w' exists in the database\n\n"
           "[AutogradeApp | ERROR] There was an error processing assignment 'w' for student 'reference'\n"
           "[AutogradeApp | ERROR] Please see the the above traceback for details on the specific errors.")
    assert failure_cause(log) == ("nbgrader.converters.base.NbGraderException: No assignment with ID 'w' exists "
                                  "in the database")
    assert failure_cause("the kernel died") == "the kernel died" and failure_cause("") == "not graded"
