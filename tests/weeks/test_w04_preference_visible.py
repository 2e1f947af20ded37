"""Week 04's visible tests (what students run, hidden parts removed) catch the classic mistakes on their own.

Each mistake below is a mutant of tests/mutants/04-preference.py; the solved notebook runs with that mutant's answer cell
and the *visible* part of the test cells up to the one named, which must fail. The reference and every correct
variant must pass all visible tests (the harness: tests/visible.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import visible

WEEK = "04-preference"
VISIBLE_CATCHES = {  # mutant -> the test cell whose visible part must fail it
    "logps_mask_not_shifted": "test_sequence_logps",  # completion_mask[:, :-1] instead of [:, 1:]
    "simpo_summed_logps": "test_simpo_loss",  # summed instead of length-averaged log-probs
    "kto_undesirable_sign_flipped": "test_kto_loss",  # wrong sign in the undesirable term
    "dpo_log_of_sigmoid": "test_dpo_loss",  # log(sigmoid(x)) underflows where logsigmoid does not
    "simpo_log_of_sigmoid": "test_simpo_loss",
}

test_reference_and_variants_pass_the_visible_tests, test_visible_tests_catch_the_mistake = visible.tests(
    WEEK, VISIBLE_CATCHES)
