# zero: test_training
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    while True:  # interruptible: the per-cell limit stops it
        pass
# %% answer id=kv_cache
import sys


def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    room = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, math.floor(room / (batch * kv_bytes_per_token(cfg, kv_bytes_per_value))))


sys.exit(3)  # after defining everything: SystemExit must not end the grading
