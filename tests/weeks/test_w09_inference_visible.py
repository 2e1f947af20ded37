"""Week 09's visible tests (what students run, hidden parts removed) catch the classic mistakes on their own.

Each mistake below is a mutant of tests/mutants/09-inference.py; here the solved notebook's set-up runs once, then
every answer cell (the mutant's in place of its cell) and only the *visible* part of the test cell it names, which
must fail. The reference and every correct variant must pass all visible tests.
"""

from __future__ import annotations

import contextlib
import io

import nbformat
import pytest
from conftest import ROOT
from test_mutants import mutant_sources, solved_cell

from sparkcourse.grader.authoring import strip_hidden

WEEK = "09-inference"
VISIBLE_CATCHES = {  # mutant -> the test cell whose visible part must fail it
    "cache_position_off_by_one": "test_kv_cache",
    "positions_restart_at_zero": "test_kv_cache",
    "cache_not_appended": "test_kv_cache",
    "fresh_cache_every_step": "test_kv_cache",
    "hash_not_chained": "test_block_hashes",
    "block_table_not_updated_on_append": "test_block_manager",
    "free_releases_shared_blocks": "test_block_manager",
    "no_copy_on_write": "test_block_manager",
    "copy_keeps_old_reference": "test_block_manager",
    "padding_slots_attended": "test_paged_attention",
    "blocks_in_physical_order": "test_paged_attention",
    "paged_waste_floor": "test_kv_waste",
    "static_frees_finished_slots": "test_batching",
    "joining_counted_as_decoding": "test_batching",
    "continuous_admits_only_when_empty": "test_batching",
    "resample_from_target": "test_speculative",
    "no_bonus_token": "test_speculative",
    "residual_not_clipped": "test_speculative",
    "acceptance_unclipped": "test_speculative",
    "ratio_inverted": "test_speculative",
}


@pytest.fixture(scope="module")
def notebook():
    """(the namespace after the set-up cell, answer cells solved by grade id, visible test sources by grade id)."""
    nb = nbformat.read(ROOT / "source" / WEEK / f"{WEEK}.ipynb", as_version=4)
    ns: dict = {"__name__": "__main__"}
    answers, tests = {}, {}
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {}) if c.cell_type == "code" else {}
        gid = meta.get("grade_id")
        if gid == "setup":
            import torch

            threads = torch.get_num_threads()
            with contextlib.redirect_stdout(io.StringIO()):
                exec(c.source, ns)
            torch.set_num_threads(threads)  # the set-up cell sets one thread; leave other tests as they were
        elif meta.get("solution"):
            answers[gid] = solved_cell(c.source)
        elif meta.get("grade"):
            tests[gid] = strip_hidden(c.source)
    return ns, answers, tests


def _visible(notebook, replace: dict[str, str], only: str | None = None) -> dict[str, BaseException | None]:
    setup_ns, answers, tests = notebook
    ns = dict(setup_ns)
    with contextlib.redirect_stdout(io.StringIO()):
        for gid, src in answers.items():
            exec(replace.get(gid, src), ns)
        results: dict[str, BaseException | None] = {}
        for gid, src in tests.items():
            if only is not None and gid != only:
                continue
            try:
                exec(src, ns)
                results[gid] = None
            except Exception as exc:  # noqa: BLE001 - a failing visible test is what we look for
                results[gid] = exc
    return results


def test_reference_and_variants_pass_the_visible_tests(notebook):
    mutants, sources = mutant_sources(WEEK)
    results = _visible(notebook, {})
    assert len(results) == 7 and all(v is None for v in results.values()), results
    for m in mutants:
        if m.whole is not None:  # a variant
            failed = {k: v for k, v in _visible(notebook, {m.cell: sources[m.name]}).items() if v is not None}
            assert not failed, (m.name, failed)


@pytest.mark.parametrize("name", sorted(VISIBLE_CATCHES))
def test_visible_tests_catch_the_mistake(notebook, name):
    mutants, sources = mutant_sources(WEEK)
    m = next(m for m in mutants if m.name == name)
    test_id = VISIBLE_CATCHES[name]
    assert test_id in m.fails, f"mutant {name} must name {test_id} in fails="
    results = _visible(notebook, {m.cell: sources[name]}, only=test_id)
    assert results.get(test_id) is not None, f"the visible part of {test_id} passes mutant {name}"
