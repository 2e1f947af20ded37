# Plausible mistakes for 00-spark-capacity (see tests/test_mutants.py for the format).

# %% mutant name=scale_overhead_forgotten cell=bits_per_param fails=test_bits_per_param
def bits_per_param(fmt, group_size=None):
    table = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "fp8": 8.0, "int8": 8.0,
             "nvfp4": 4.0, "mxfp4": 4.0, "int4": 4.0, "nf4": 4.0}
    if fmt not in table:
        raise ValueError(fmt)
    return table[fmt]


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size) / 8

# %% mutant name=bits_not_bytes cell=bits_per_param fails=test_weight_bytes
def bits_per_param(fmt, group_size=None):
    plain = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
    if fmt in plain:
        return float(plain[fmt])
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / (group_size or blocks[fmt][1])
    if fmt == "nf4":
        b = group_size or 64
        return 4 + 8 / b + 32 / (b * 256)
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size)

# %% mutant name=nf4_without_double_quant cell=bits_per_param fails=test_bits_per_param
def bits_per_param(fmt, group_size=None):
    plain = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
    if fmt in plain:
        return float(plain[fmt])
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128), "nf4": (32, 64)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / (group_size or blocks[fmt][1])
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size) / 8

# %% mutant name=group_size_ignored cell=bits_per_param fails=test_bits_per_param
def bits_per_param(fmt, group_size=None):
    plain = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
    if fmt in plain:
        return float(plain[fmt])
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / blocks[fmt][1]
    if fmt == "nf4":
        return 4 + 8 / 64 + 32 / (64 * 256)
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size) / 8

# %% mutant name=delegates_to_planner cell=bits_per_param fails=test_bits_per_param
from sparkcourse.capacity import bits_per_param as _b


def bits_per_param(fmt, group_size=None):
    return _b(fmt, group_size)


def weight_bytes(n_params, fmt, group_size=None):
    return n_params * bits_per_param(fmt, group_size) / 8

# %% mutant name=tied_embeddings_ignored cell=param_counts fails=test_dense_params
def dense_params(cfg):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    return 2 * V * d + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    raise NotImplementedError

# %% mutant name=kv_projections_full_width cell=param_counts fails=test_dense_params
def dense_params(cfg):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    attn = 4 * d * d
    emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    raise NotImplementedError

# %% mutant name=head_dim_key_ignored cell=param_counts fails=test_dense_params
def dense_params(cfg):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    raise NotImplementedError

# %% mutant name=moe_active_equals_total cell=param_counts fails=test_moe_params
def dense_params(cfg):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    d, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_local_experts"]
    total = dense_params(cfg) + L * (E - 1) * 3 * d * cfg["intermediate_size"] + L * d * E
    return total, total

# %% mutant name=moe_router_forgotten cell=param_counts fails=test_moe_params
def dense_params(cfg):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d


def moe_params(cfg):
    d, L, E, k = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    base = dense_params(cfg) - L * expert
    return base + L * E * expert, base + L * k * expert

# %% mutant name=mha_heads_not_kv_heads cell=kv_cache fails=test_kv_bytes,test_max_context
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)))

# %% mutant name=k_without_v cell=kv_cache fails=test_kv_bytes,test_max_context
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)))

# %% mutant name=batch_ignored cell=kv_cache fails=test_max_context
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, int(free // kv_bytes_per_token(cfg, kv_bytes_per_value)))

# %% mutant name=negative_context_when_weights_overflow cell=kv_cache fails=test_max_context
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch))

# %% mutant name=optimizer_state_forgotten cell=training fails=test_training
def training_bytes(n_params, method="full", adapter_params=0):
    if method == "full":
        return n_params * 4
    if method == "lora":
        return n_params * 2 + adapter_params * 4
    if method == "qlora":
        return weight_bytes(n_params, "nf4") + adapter_params * 4
    raise ValueError(method)

# %% mutant name=lora_base_trained cell=training fails=test_training
def training_bytes(n_params, method="full", adapter_params=0):
    if method not in ("full", "lora", "qlora"):
        raise ValueError(method)
    if method == "qlora":
        return weight_bytes(n_params, "nf4") + adapter_params * 16
    return n_params * 16 + (adapter_params * 16 if method == "lora" else 0)

# %% mutant name=qlora_plain_4bit cell=training fails=test_training
def training_bytes(n_params, method="full", adapter_params=0):
    if method == "full":
        return n_params * 16
    if method == "lora":
        return n_params * 2 + adapter_params * 16
    if method == "qlora":
        return n_params * 0.5 + adapter_params * 16
    raise ValueError(method)

# %% mutant name=relative_error_inverted cell=audit fails=test_audit
def audit_claim(claim):
    q = claim["quantity"]
    if q == "weights_gb":
        cfg = CONFIGS[claim["model"]]
        n = moe_params(cfg)[0] if "num_local_experts" in cfg else dense_params(cfg)
        value = weight_bytes(n, claim["fmt"]) / GB
    elif q == "kv_mb_per_token":
        value = kv_bytes_per_token(CONFIGS[claim["model"]], claim["bytes_per_value"]) / MB
    elif q == "full_ft_max_params_b":
        value = SPARK_BYTES / training_bytes(1, "full") / 1e9
    else:
        raise ValueError(q)
    rel = (value - claim["claimed"]) / claim["claimed"]
    return {"computed": value, "rel_error": rel, "holds": abs(rel) <= 0.10}

# %% mutant name=moe_counted_as_dense cell=audit fails=test_audit
def audit_claim(claim):
    q = claim["quantity"]
    if q == "weights_gb":
        value = weight_bytes(dense_params(CONFIGS[claim["model"]]), claim["fmt"]) / GB
    elif q == "kv_mb_per_token":
        value = kv_bytes_per_token(CONFIGS[claim["model"]], claim["bytes_per_value"]) / MB
    elif q == "full_ft_max_params_b":
        value = SPARK_BYTES / training_bytes(1, "full") / 1e9
    else:
        raise ValueError(q)
    rel = (claim["claimed"] - value) / value
    return {"computed": value, "rel_error": rel, "holds": abs(rel) <= 0.10}

# %% mutant name=variant_loop_style cell=kv_cache fails=
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    head = cfg["head_dim"] if "head_dim" in cfg else cfg["hidden_size"] // cfg["num_attention_heads"]
    total = 0.0
    for _layer in range(cfg["num_hidden_layers"]):
        for _tensor in ("k", "v"):
            total += cfg["num_key_value_heads"] * head * bytes_per_value
    return total


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    per_token = kv_bytes_per_token(cfg, kv_bytes_per_value) * batch
    free = budget_bytes - dense_params(cfg) * bits_per_param(weight_fmt) / 8
    return int(math.floor(free / per_token)) if free > 0 else 0
