"""Week 08's visible tests (what students run, hidden parts removed) catch the classic mistakes on their own.

Each mistake below is a mutant of tests/mutants/08-moe.py; the solved notebook runs with that mutant's answer cell
and the *visible* part of the test cells up to the one named, which must fail. The reference and every correct
variant must pass all visible tests (the harness: tests/visible.py).
"""

from __future__ import annotations

import visible

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

test_reference_and_variants_pass_the_visible_tests, test_visible_tests_catch_the_mistake = visible.tests(
    WEEK, VISIBLE_CATCHES)
