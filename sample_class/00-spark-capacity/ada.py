# %% answer id=bits_per_param
SCALED = {  # element bits, scale bits, default block
    "nvfp4": (4, 8, 16),
    "mxfp4": (4, 8, 32),
    "int4": (4, 16, 128),
}


def bits_per_param(fmt, group_size=None):
    """Bits per parameter including scales."""
    if fmt in ("fp32",):
        return 32.0
    if fmt in ("fp16", "bf16"):
        return 16.0
    if fmt in ("fp8", "int8"):
        return 8.0
    if fmt in SCALED:
        elem, scale, block = SCALED[fmt]
        return elem + scale / (group_size if group_size else block)
    if fmt == "nf4":
        b = group_size if group_size else 64
        return 4.0 + (8.0 + 32.0 / 256) / b
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return bits_per_param(fmt, group_size) * n_params / 8.0

# %% answer id=param_counts
def _attn(cfg):
    d = cfg["hidden_size"]
    hd = cfg["head_dim"] if cfg.get("head_dim") else d // cfg["num_attention_heads"]
    q = d * cfg["num_attention_heads"] * hd
    return 2 * q + 2 * d * cfg["num_key_value_heads"] * hd


def dense_params(cfg):
    d = cfg["hidden_size"]
    layer = _attn(cfg) + 3 * d * cfg["intermediate_size"] + 2 * d
    heads = 1 if cfg.get("tie_word_embeddings", False) else 2
    return cfg["num_hidden_layers"] * layer + heads * cfg["vocab_size"] * d + d


def moe_params(cfg):
    d = cfg["hidden_size"]
    per_expert = 3 * d * cfg["intermediate_size"]
    shared = dense_params(cfg) - cfg["num_hidden_layers"] * per_expert  # everything but the one MLP
    shared += cfg["num_hidden_layers"] * d * cfg["num_local_experts"]  # routers
    total = shared + cfg["num_hidden_layers"] * cfg["num_local_experts"] * per_expert
    active = shared + cfg["num_hidden_layers"] * cfg["num_experts_per_tok"] * per_expert
    return total, active

# %% answer id=kv_cache
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    k = cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * bytes_per_value
    return k + k  # V is the same size as K


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    room = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, math.floor(room / (batch * kv_bytes_per_token(cfg, kv_bytes_per_value))))

# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    adam_mixed = 16
    table = {
        "full": lambda: adam_mixed * n_params,
        "lora": lambda: 2 * n_params + adam_mixed * adapter_params,
        "qlora": lambda: n_params * bits_per_param("nf4") / 8 + adam_mixed * adapter_params,
    }
    if method not in table:
        raise ValueError(method)
    return table[method]()

# %% answer id=audit
def audit_claim(claim):
    kind = claim["quantity"]
    if kind == "full_ft_max_params_b":
        computed = SPARK_BYTES / 16 / 1e9
    elif kind == "kv_mb_per_token":
        computed = kv_bytes_per_token(CONFIGS[claim["model"]], claim["bytes_per_value"]) / 1e6
    elif kind == "weights_gb":
        cfg = CONFIGS[claim["model"]]
        n = moe_params(cfg)[0] if cfg.get("num_local_experts") else dense_params(cfg)
        computed = weight_bytes(n, claim["fmt"]) / 1e9
    else:
        raise ValueError(kind)
    err = claim["claimed"] / computed - 1
    return dict(computed=computed, rel_error=err, holds=abs(err) <= 0.1)
