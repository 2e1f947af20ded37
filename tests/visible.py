"""A week's visible tests (what students run, hidden parts removed) must catch its classic mistakes on their own.

Shared by ``tests/weeks/test_wNN_topic_visible.py``: each names mistakes (mutants of ``tests/mutants/NN-topic.py``)
and the test cell whose *visible* part must fail each; the solved notebook then runs in order — set-up, every answer
cell (the mutant's in place of its cell), the visible part of every test cell up to the one named. The reference
and every correct variant must pass all visible tests::

    test_reference_and_variants_pass_the_visible_tests, test_visible_tests_catch_the_mistake = visible.tests(
        "08-moe", {"no_renormalisation": "test_router", ...})
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import nbformat
import pytest
import torch
from conftest import ROOT
from test_mutants import mutant_sources, solved_cell

from sparkcourse.grader.authoring import strip_hidden


def cells(week: str) -> tuple[list[tuple[str | None, str, str]], dict[str, str]]:
    """(grade id, kind, source) of the source notebook's code cells, and each answer cell solved."""
    nb = nbformat.read(ROOT / "source" / week / f"{week}.ipynb", as_version=4)
    out, answers = [], {}
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        meta = c.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        kind = "answer" if meta.get("solution") else ("test" if meta.get("grade") else "code")
        out.append((gid, kind, c.source))
        if kind == "answer":
            answers[gid] = solved_cell(c.source)
    return out, answers


def run_visible(week: str, replace: dict[str, str], stop_after: str | None = None) -> dict[str, BaseException | None]:
    """Set-up, every answer cell (``replace`` swaps some) and the visible part of every test cell, in order: each
    test cell's exception, or None where it passed. Torch's thread count is left as it was (set-up cells set it)."""
    notebook, answers = cells(week)
    ns: dict = {"__name__": "__main__"}
    results: dict[str, BaseException | None] = {}
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for gid, kind, src in notebook:
                if gid == "setup":
                    exec(src, ns)
                elif kind == "answer":
                    exec(replace.get(gid, answers[gid]), ns)
                elif kind == "test":
                    try:
                        exec(strip_hidden(src), ns)
                        results[gid] = None
                    except Exception as exc:  # noqa: BLE001 - a failing visible test is what we look for
                        results[gid] = exc
                    if gid == stop_after:
                        break
    finally:
        torch.set_num_threads(threads)
    return results


def tests(week: str, catches: dict[str, str]) -> tuple[Callable[[], None], Callable[[str], None]]:
    """The two tests of a week's visible-test module: the reference and every variant pass every visible test;
    each mutant in ``catches`` fails the visible part of the test cell named for it."""

    def test_reference_and_variants_pass_the_visible_tests():
        mutants, sources = mutant_sources(week)
        results = run_visible(week, {})
        graded = sum(kind == "test" for _, kind, _ in cells(week)[0])
        assert len(results) == graded and all(v is None for v in results.values()), results
        for m in mutants:
            if m.whole is not None:  # a variant
                failed = {k: v for k, v in run_visible(week, {m.cell: sources[m.name]}).items() if v is not None}
                assert not failed, (m.name, failed)

    @pytest.mark.parametrize("name", sorted(catches))
    def test_visible_tests_catch_the_mistake(name):
        mutants, sources = mutant_sources(week)
        m = next((m for m in mutants if m.name == name), None)
        assert m is not None, f"no mutant {name} in tests/mutants/{week}.py"
        test_id = catches[name]
        assert test_id in m.fails, f"mutant {name} must name {test_id} in fails="
        results = run_visible(week, {m.cell: sources[name]}, stop_after=test_id)
        assert results.get(test_id) is not None, f"the visible part of {test_id} passes mutant {name}"

    return test_reference_and_variants_pass_the_visible_tests, test_visible_tests_catch_the_mistake
