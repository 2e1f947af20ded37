# zero: test_training test_audit
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# The test also edits test_audit to `pass`, turns test_training into markdown, deletes test_kv_bytes (kept
# honest: it must be restored and score), appends a duplicate test_bits_per_param that just passes, and names
# a kernelspec that does not exist.
# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    return 1.0
# %% answer id=audit
def audit_claim(claim):
    return {"computed": 0.0, "rel_error": 0.0, "holds": True}
