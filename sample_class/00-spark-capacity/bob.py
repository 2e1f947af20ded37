# %% answer id=bits_per_param
# Correct bits; weight_bytes forgets to divide by 8 (bits instead of bytes): 3 of 4 points.
def bits_per_param(fmt, group_size=None):
    base = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "fp8": 8.0, "int8": 8.0}
    if fmt in base:
        return base[fmt]
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
    if fmt == "nf4":
        return 4 + 8 / (group_size or 64) + 32 / ((group_size or 64) * 256)
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size)

# %% answer id=param_counts
# dense_params is right (2 points); moe_params counts every expert as active (0 points).
def dense_params(cfg):
    d = cfg["hidden_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = 2 * d * cfg["num_attention_heads"] * hd + 2 * d * cfg["num_key_value_heads"] * hd
    emb = cfg["vocab_size"] * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + cfg["num_hidden_layers"] * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    total = dense_params(cfg) + L * (cfg["num_local_experts"] - 1) * 3 * d * cfg["intermediate_size"]
    total += L * d * cfg["num_local_experts"]
    return total, total

# %% answer id=kv_cache
# Uses the query heads (MHA) instead of the KV heads: both KV tests fail (0 points).
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - dense_params(cfg) * bits_per_param(weight_fmt) / 8
    return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch))

# %% answer id=training
# Right (2 points).
def training_bytes(n_params, method="full", adapter_params=0):
    if method == "full":
        return 16 * n_params
    if method == "lora":
        return 2 * n_params + 16 * adapter_params
    if method == "qlora":
        return n_params * bits_per_param("nf4") / 8 + 16 * adapter_params
    raise ValueError(method)
