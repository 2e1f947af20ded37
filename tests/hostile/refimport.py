# zero: test_training test_kv_bytes test_max_context test_audit
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# test_max_context and test_audit call kv_bytes_per_token, so they fall with it.
# %% answer id=training
try:
    from sparkcourse.reference import w00_spark_capacity as R
    print("IMPORTED-TOP")
except ImportError as exc:
    print("BLOCKED-TOP", exc)
    R = None


def training_bytes(n_params, method="full", adapter_params=0):
    return R.training_bytes(n_params, method, adapter_params)
# %% answer id=kv_cache
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    from sparkcourse.reference import w00_spark_capacity  # deferred: runs inside the test cell

    return w00_spark_capacity.kv_bytes_per_token(cfg, bytes_per_value)


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    room = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, math.floor(room / (batch * kv_bytes_per_token(cfg, kv_bytes_per_value))))
