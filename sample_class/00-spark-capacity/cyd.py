# %% answer id=bits_per_param
# This cell crashes on its first line, so bits_per_param and weight_bytes are never defined:
# Exercise 1 (4 points), max_context (2) and the audit (3) fail with it. 17 - 9 = 8 points.
import capacity_tables_from_a_blog_post  # noqa: F401  (no such module)


def bits_per_param(fmt, group_size=None):
    return {"bf16": 16.0, "fp8": 8.0, "nvfp4": 4.5}[fmt]


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size) / 8

# %% answer id=param_counts
def dense_params(cfg):
    d = cfg["hidden_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = 2 * d * cfg["num_attention_heads"] * hd + 2 * d * cfg["num_key_value_heads"] * hd
    emb = cfg["vocab_size"] * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + cfg["num_hidden_layers"] * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    d, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_local_experts"]
    expert = 3 * d * cfg["intermediate_size"]
    base = dense_params(cfg) - L * expert + L * d * E
    return base + L * E * expert, base + L * cfg["num_experts_per_tok"] * expert

# %% answer id=kv_cache
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)))

# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    nf4_bytes = (4 + 8 / 64 + 32 / (64 * 256)) / 8
    per = {"full": 16, "lora": 2, "qlora": nf4_bytes}
    if method not in per:
        raise ValueError(method)
    return per[method] * n_params + (0 if method == "full" else 16 * adapter_params)

# %% answer id=audit
def audit_claim(claim):
    if claim["quantity"] == "weights_gb":
        value = weight_bytes(dense_params(CONFIGS[claim["model"]]), claim["fmt"]) / 1e9
    elif claim["quantity"] == "kv_mb_per_token":
        value = kv_bytes_per_token(CONFIGS[claim["model"]], claim["bytes_per_value"]) / 1e6
    elif claim["quantity"] == "full_ft_max_params_b":
        value = SPARK_BYTES / 16e9
    else:
        raise ValueError(claim["quantity"])
    rel = (claim["claimed"] - value) / value
    return {"computed": value, "rel_error": rel, "holds": abs(rel) <= 0.1}
