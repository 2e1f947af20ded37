"""Week 09's visible tests (what students run, hidden parts removed) catch the classic mistakes on their own.

Each mistake below is a mutant of tests/mutants/09-inference.py; the solved notebook runs with that mutant's answer cell
and the *visible* part of the test cells up to the one named, which must fail. The reference and every correct
variant must pass all visible tests (the harness: tests/visible.py).
"""

from __future__ import annotations

import visible

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

test_reference_and_variants_pass_the_visible_tests, test_visible_tests_catch_the_mistake = visible.tests(
    WEEK, VISIBLE_CATCHES)
