"""Week 08's visible tests (what students run, hidden parts removed) catch the classic mistakes on their own.

Each mistake below is a mutant of tests/mutants/08-moe.py; here the solved notebook runs with that mutant's
answer cell and only the *visible* part of the test cell it names, which must fail. The reference and every
correct variant must pass all visible tests.
"""

from __future__ import annotations

import contextlib
import io

import nbformat
import pytest
from conftest import ROOT
from test_mutants import mutant_sources, solved_cell

from sparkcourse.grader.authoring import strip_hidden

WEEK = "08-moe"
VISIBLE_CATCHES = {  # mutant -> the test cell whose visible part must fail it (the classic mistakes)
    "no_renormalisation": "test_router",  # kept weights do not sum to 1
    "topk_over_tokens": "test_router",  # top-k along the wrong dimension
    "softmax_over_tokens": "test_router",  # softmax over the tokens of one expert
    "moe_without_renormalisation": "test_moe_forward",
    "capacity_rounded_down": "test_capacity",  # capacity rounded the wrong way
    "capacity_rounded_to_nearest": "test_capacity",
    "capacity_ignores_top_k": "test_capacity",
    "dropped_not_counted": "test_dispatch",  # tokens dropped silently
    "capacity_over_the_whole_batch": "test_dispatch",
    "aux_loss_on_counts": "test_aux_loss",  # counts instead of fractions
    "aux_loss_soft_fractions": "test_aux_loss",
    "aux_loss_divided_by_k": "test_aux_loss",
    "z_loss_summed": "test_z_loss",
    "deepseek_renormalised": "test_shared_experts",
    "deepseek_without_shared": "test_shared_experts",
}


def _cells() -> tuple[list[tuple[str | None, str, str]], dict[str, str]]:
    """(grade id, kind, source) of the source notebook's code cells, and each answer cell solved."""
    nb = nbformat.read(ROOT / "source" / WEEK / f"{WEEK}.ipynb", as_version=4)
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


def _run_visible(replace: dict[str, str], stop_after: str | None = None) -> dict[str, BaseException | None]:
    """Setup, every answer cell (``replace`` swaps some) and the visible part of every test cell, in order."""
    cells, answers = _cells()
    ns: dict = {"__name__": "__main__"}
    results: dict[str, BaseException | None] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for gid, kind, src in cells:
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
    return results


def test_reference_and_variants_pass_the_visible_tests():
    mutants, sources = mutant_sources(WEEK)
    results = _run_visible({})
    assert results and all(v is None for v in results.values()), results
    for m in mutants:
        if m.whole is not None:  # a variant
            failed = {k: v for k, v in _run_visible({m.cell: sources[m.name]}).items() if v is not None}
            assert not failed, (m.name, failed)


@pytest.mark.parametrize("name", sorted(VISIBLE_CATCHES))
def test_visible_tests_catch_the_mistake(name):
    mutants, sources = mutant_sources(WEEK)
    m = next(m for m in mutants if m.name == name)
    test_id = VISIBLE_CATCHES[name]
    assert test_id in m.fails, f"mutant {name} must name {test_id} in fails="
    results = _run_visible({m.cell: sources[name]}, stop_after=test_id)
    assert results.get(test_id) is not None, f"the visible part of {test_id} passes mutant {name}"
