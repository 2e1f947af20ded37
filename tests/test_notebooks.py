"""Every assignment: authoring in sync, clean sources, a fresh release, the solution passes, the stub fails."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from conftest import ASSIGNMENTS, BLANK, ROOT

from sparkcourse.grader.authoring import render

pytestmark = pytest.mark.skipif(not ASSIGNMENTS, reason="no assignments yet")


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_source_matches_authoring_file(a):
    authoring = ROOT / "authoring" / f"{a}.py"
    assert authoring.exists(), f"authoring/{a}.py is missing"
    assert (ROOT / "source" / a / f"{a}.ipynb").read_text() == render(authoring), (
        f"source/{a} is out of date: run `sparkcourse author`")


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_source_has_no_outputs_and_unique_ids(a):
    cells = _cells(ROOT / "source" / a / f"{a}.ipynb")
    for c in cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{a}: a code cell was committed with outputs"
    ids = [_meta(c)["grade_id"] for c in cells if "grade_id" in _meta(c)]
    assert len(ids) == len(set(ids)), f"{a}: duplicate grade ids"
    graded = [c for c in cells if _meta(c).get("grade")]
    assert graded and all(_meta(c).get("points", 0) > 0 for c in graded)
    for c in cells:
        if _meta(c).get("solution"):
            assert "### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source
        if _meta(c).get("grade"):
            assert "### BEGIN HIDDEN TESTS" in c.source, f"{a}/{_meta(c)['grade_id']}: no hidden tests"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_release_holds_no_solutions_or_hidden_tests(a):
    source = _cells(ROOT / "source" / a / f"{a}.ipynb")
    text = (ROOT / "release" / a / f"{a}.ipynb").read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    release_sources = "\n".join(c.source for c in _cells(ROOT / "release" / a / f"{a}.ipynb"))
    for c in source:
        for block in re.findall(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1", c.source, re.S):
            for line in block[1].splitlines():
                s = line.strip()
                if len(s) > 30 and not s.startswith(("#", "from ", "import ")) and s not in _VISIBLE_LINES(a):
                    assert s not in release_sources, f"{a}: solution/hidden line leaked into the release: {s}"


def _VISIBLE_LINES(a):  # lines that legitimately appear both in a hidden block and in visible code
    cells = _cells(ROOT / "source" / a / f"{a}.ipynb")
    out = set()
    for c in cells:
        stripped = re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END \1", "", c.source, flags=re.S)
        out |= {line.strip() for line in stripped.splitlines()}
    return out


@pytest.mark.grading
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_release_is_what_build_makes(graded_course, a):
    built = json.loads((graded_course.root / "release" / a / f"{a}.ipynb").read_text())
    committed = json.loads((ROOT / "release" / a / f"{a}.ipynb").read_text())
    assert built == committed, f"release/{a} is stale: run `sparkcourse build` and commit release/"
    built_files = {p.relative_to(graded_course.root / "release" / a)
                   for p in (graded_course.root / "release" / a).rglob("*") if p.is_file()}
    committed_files = {p.relative_to(ROOT / "release" / a) for p in (ROOT / "release" / a).rglob("*") if p.is_file()}
    assert built_files == committed_files


@pytest.mark.grading
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_solution_passes_every_test(graded_course, a):
    scores = graded_course.solution_scores(a)
    failed = {k: v for k, v in scores.items() if v[0] != v[1]}
    assert scores and not failed, f"{a}: the source notebook fails {failed}"


@pytest.mark.grading
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_untouched_release_scores_zero(graded_course, a):
    scores = graded_course.cell_scores(a, BLANK)
    passed = {k: v for k, v in scores.items() if v[0] != 0}
    assert scores and not passed, f"{a}: these test cells pass on the stub: {passed}"
