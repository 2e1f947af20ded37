# Plausible mistakes for 00-spark-capacity (see tests/test_mutants.py for the format).

# %% mutant name=scale_overhead_forgotten cell=bits_per_param fails=test_bits_per_param
replace <<<
    """Stored bits per parameter of `fmt`, block-scale overhead included."""
    plain = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
    if fmt in plain:
        return float(plain[fmt])
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
    if fmt == "nf4":
        block = group_size or 64
        return 4 + 8 / block + 32 / (block * 256)
    raise ValueError(f"unknown format {fmt!r}")
===
    table = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "fp8": 8.0, "int8": 8.0,
             "nvfp4": 4.0, "mxfp4": 4.0, "int4": 4.0, "nf4": 4.0}
    if fmt not in table:
        raise ValueError(fmt)
    return table[fmt]
>>>
delete """Bytes needed to store `n_params` weights in `fmt`."""

# %% mutant name=bits_not_bytes cell=bits_per_param fails=test_weight_bytes
delete """Stored bits per parameter of `fmt`, block-scale overhead included."""
replace <<<
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
===
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / (group_size or blocks[fmt][1])
>>>
replace block = group_size or 64 => b = group_size or 64
replace return 4 + 8 / block + 32 / (block * 256) => return 4 + 8 / b + 32 / (b * 256)
replace raise ValueError(f"unknown format {fmt!r}") => raise ValueError(fmt)
delete """Bytes needed to store `n_params` weights in `fmt`."""
replace return n_params * bits_per_param(fmt, group_size) / 8 => return n_params * bits_per_param(fmt, group_size)

# %% mutant name=nf4_without_double_quant cell=bits_per_param fails=test_bits_per_param
delete """Stored bits per parameter of `fmt`, block-scale overhead included."""
replace <<<
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
    if fmt == "nf4":
        block = group_size or 64
        return 4 + 8 / block + 32 / (block * 256)
    raise ValueError(f"unknown format {fmt!r}")
===
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128), "nf4": (32, 64)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / (group_size or blocks[fmt][1])
    raise ValueError(fmt)
>>>
delete """Bytes needed to store `n_params` weights in `fmt`."""

# %% mutant name=group_size_ignored cell=bits_per_param fails=test_bits_per_param
delete """Stored bits per parameter of `fmt`, block-scale overhead included."""
replace <<<
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
===
    blocks = {"nvfp4": (8, 16), "mxfp4": (8, 32), "int4": (16, 128)}
    if fmt in blocks:
        return 4 + blocks[fmt][0] / blocks[fmt][1]
>>>
delete block = group_size or 64
replace return 4 + 8 / block + 32 / (block * 256) => return 4 + 8 / 64 + 32 / (64 * 256)
replace raise ValueError(f"unknown format {fmt!r}") => raise ValueError(fmt)
delete """Bytes needed to store `n_params` weights in `fmt`."""

# %% mutant name=delegates_to_planner cell=bits_per_param fails=test_bits_per_param
replace <<<
def bits_per_param(fmt, group_size=None):
===
from sparkcourse.capacity import bits_per_param as _b


def bits_per_param(fmt, group_size=None):
>>>
replace <<<
    """Stored bits per parameter of `fmt`, block-scale overhead included."""
    plain = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
    if fmt in plain:
        return float(plain[fmt])
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
    if fmt == "nf4":
        block = group_size or 64
        return 4 + 8 / block + 32 / (block * 256)
    raise ValueError(f"unknown format {fmt!r}")
===
    return _b(fmt, group_size)
>>>
delete """Bytes needed to store `n_params` weights in `fmt`."""

# %% mutant name=tied_embeddings_ignored cell=param_counts fails=test_dense_params
delete """Parameters of a Llama-style dense decoder."""
delete mlp = 3 * d * cfg["intermediate_size"]
delete emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
replace return emb + L * (attn + mlp + 2 * d) + d => return 2 * V * d + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d
replace <<<
    """(total, active) parameters of a Mixtral-style mixture of experts."""
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
    return without_mlp + L * E * expert, without_mlp + L * k * expert
===
    raise NotImplementedError
>>>

# %% mutant name=kv_projections_full_width cell=param_counts fails=test_dense_params
delete """Parameters of a Llama-style dense decoder."""
replace <<<
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    mlp = 3 * d * cfg["intermediate_size"]
===
    attn = 4 * d * d
>>>
replace return emb + L * (attn + mlp + 2 * d) + d => return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d
replace <<<
    """(total, active) parameters of a Mixtral-style mixture of experts."""
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
    return without_mlp + L * E * expert, without_mlp + L * k * expert
===
    raise NotImplementedError
>>>

# %% mutant name=head_dim_key_ignored cell=param_counts fails=test_dense_params
delete """Parameters of a Llama-style dense decoder."""
replace hd = cfg.get("head_dim") or d // cfg["num_attention_heads"] => hd = d // cfg["num_attention_heads"]
delete mlp = 3 * d * cfg["intermediate_size"]
replace return emb + L * (attn + mlp + 2 * d) + d => return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d
replace <<<
    """(total, active) parameters of a Mixtral-style mixture of experts."""
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
    return without_mlp + L * E * expert, without_mlp + L * k * expert
===
    raise NotImplementedError
>>>

# %% mutant name=moe_active_equals_total cell=param_counts fails=test_moe_params
delete """Parameters of a Llama-style dense decoder."""
delete mlp = 3 * d * cfg["intermediate_size"]
replace return emb + L * (attn + mlp + 2 * d) + d => return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d
replace <<<
    """(total, active) parameters of a Mixtral-style mixture of experts."""
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
    return without_mlp + L * E * expert, without_mlp + L * k * expert
===
    d, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_local_experts"]
    total = dense_params(cfg) + L * (E - 1) * 3 * d * cfg["intermediate_size"] + L * d * E
    return total, total
>>>

# %% mutant name=moe_router_forgotten cell=param_counts fails=test_moe_params
delete """Parameters of a Llama-style dense decoder."""
delete mlp = 3 * d * cfg["intermediate_size"]
replace return emb + L * (attn + mlp + 2 * d) + d => return emb + L * (attn + 3 * d * cfg["intermediate_size"] + 2 * d) + d
delete """(total, active) parameters of a Mixtral-style mixture of experts."""
delete d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
replace E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"] => d, L, E, k = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_local_experts"], cfg["num_experts_per_tok"]
replace <<<
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
===
    base = dense_params(cfg) - L * expert
>>>
replace return without_mlp + L * E * expert, without_mlp + L * k * expert => return base + L * E * expert, base + L * k * expert

# %% mutant name=mha_heads_not_kv_heads cell=kv_cache fails=test_kv_bytes,test_max_context
delete """KV-cache bytes per token: K and V, all layers, KV heads × head dim."""
replace return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value => return 2 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * hd * bytes_per_value
delete """Longest context whose weights plus KV cache for `batch` sequences fit in `budget_bytes`."""
delete if free <= 0:
delete return 0
replace return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)) => return max(0, int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)))

# %% mutant name=k_without_v cell=kv_cache fails=test_kv_bytes,test_max_context
delete """KV-cache bytes per token: K and V, all layers, KV heads × head dim."""
replace return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value => return cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value
delete """Longest context whose weights plus KV cache for `batch` sequences fit in `budget_bytes`."""
delete if free <= 0:
delete return 0
replace return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)) => return max(0, int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)))

# %% mutant name=batch_ignored cell=kv_cache fails=test_max_context
delete """KV-cache bytes per token: K and V, all layers, KV heads × head dim."""
delete """Longest context whose weights plus KV cache for `batch` sequences fit in `budget_bytes`."""
delete if free <= 0:
delete return 0
replace return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)) => return max(0, int(free // kv_bytes_per_token(cfg, kv_bytes_per_value)))

# %% mutant name=negative_context_when_weights_overflow cell=kv_cache fails=test_max_context
delete """KV-cache bytes per token: K and V, all layers, KV heads × head dim."""
delete """Longest context whose weights plus KV cache for `batch` sequences fit in `budget_bytes`."""
delete if free <= 0:
delete return 0

# %% mutant name=optimizer_state_forgotten cell=training fails=test_training
delete """Weights + gradients + AdamW state in bytes, before activations."""
delete per_trained = 2 + 2 + 4 + 4 + 4
replace return n_params * per_trained => return n_params * 4
replace return n_params * 2 + adapter_params * per_trained => return n_params * 2 + adapter_params * 4
replace return weight_bytes(n_params, "nf4") + adapter_params * per_trained => return weight_bytes(n_params, "nf4") + adapter_params * 4
replace raise ValueError(f"unknown method {method!r}") => raise ValueError(method)

# %% mutant name=lora_base_trained cell=training fails=test_training
replace <<<
    """Weights + gradients + AdamW state in bytes, before activations."""
    per_trained = 2 + 2 + 4 + 4 + 4
    if method == "full":
        return n_params * per_trained
    if method == "lora":
        return n_params * 2 + adapter_params * per_trained
===
    if method not in ("full", "lora", "qlora"):
        raise ValueError(method)
>>>
replace return weight_bytes(n_params, "nf4") + adapter_params * per_trained => return weight_bytes(n_params, "nf4") + adapter_params * 16
replace <<<
    raise ValueError(f"unknown method {method!r}")
===
    return n_params * 16 + (adapter_params * 16 if method == "lora" else 0)
>>>

# %% mutant name=qlora_plain_4bit cell=training fails=test_training
delete """Weights + gradients + AdamW state in bytes, before activations."""
delete per_trained = 2 + 2 + 4 + 4 + 4
replace return n_params * per_trained => return n_params * 16
replace return n_params * 2 + adapter_params * per_trained => return n_params * 2 + adapter_params * 16
replace return weight_bytes(n_params, "nf4") + adapter_params * per_trained => return n_params * 0.5 + adapter_params * 16
replace raise ValueError(f"unknown method {method!r}") => raise ValueError(method)

# %% mutant name=relative_error_inverted cell=audit fails=test_audit
delete """Compute the claimed quantity; return computed value, relative error and whether the claim holds."""
replace raise ValueError(f"unknown quantity {q!r}") => raise ValueError(q)
replace rel = (claim["claimed"] - value) / value => rel = (value - claim["claimed"]) / claim["claimed"]

# %% mutant name=moe_counted_as_dense cell=audit fails=test_audit
delete """Compute the claimed quantity; return computed value, relative error and whether the claim holds."""
delete cfg = CONFIGS[claim["model"]]
delete n = moe_params(cfg)[0] if "num_local_experts" in cfg else dense_params(cfg)
replace value = weight_bytes(n, claim["fmt"]) / GB => value = weight_bytes(dense_params(CONFIGS[claim["model"]]), claim["fmt"]) / GB
replace raise ValueError(f"unknown quantity {q!r}") => raise ValueError(q)

# %% variant name=variant_loop_style cell=kv_cache
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

# %% mutant name=weight_bytes_from_the_planner cell=bits_per_param fails=test_weight_bytes
# The planner ships to students (later weeks use it): answering with it must not score.
replace     return n_params * bits_per_param(fmt, group_size) / 8 =>     from sparkcourse import capacity; return capacity.weight_bytes(n_params, fmt, group_size)

# %% mutant name=kv_bytes_from_the_planner cell=kv_cache fails=test_kv_bytes
replace     return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value =>     from sparkcourse.capacity import kv_bytes_per_token as k; return k(cfg, bytes_per_value)

# %% mutant name=max_context_from_the_planner cell=kv_cache fails=test_max_context
replace     return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch)) =>     import sparkcourse.capacity as c; return c.max_context(budget_bytes, cfg, weight_fmt, kv_bytes_per_value, batch)

# %% mutant name=training_bytes_from_the_planner cell=training fails=test_training
replace     per_trained = 2 + 2 + 4 + 4 + 4 =>     from sparkcourse.capacity import training_bytes as t; return t(n_params, method, adapter_params)

# %% variant name=bits_variant_layout_table cell=bits_per_param
LAYOUT = {"fp32": (32, 0, 1), "fp16": (16, 0, 1), "bf16": (16, 0, 1), "fp8": (8, 0, 1), "int8": (8, 0, 1),
          "nvfp4": (4, 8, 16), "mxfp4": (4, 8, 32), "int4": (4, 16, 128), "nf4": (4, 8, 64)}


def bits_per_param(fmt, group_size=None):
    if fmt not in LAYOUT:
        raise ValueError(f"no format called {fmt}")
    element, scale_bits, block = LAYOUT[fmt]
    if scale_bits == 0:
        return float(element)
    block = group_size if group_size else block
    bits = element + scale_bits / block
    if fmt == "nf4":  # double quantisation: 256 FP8 absmaxes share one FP32
        bits += 32 / (256 * block)
    return bits


def weight_bytes(n_params, fmt, group_size=None):
    return bits_per_param(fmt, group_size) / 8 * n_params

# %% variant name=params_variant_matrix_shapes cell=param_counts
def _attention_shapes(cfg):
    d, hq, hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // hq
    return [(d, hq * hd), (d, hkv * hd), (d, hkv * hd), (hq * hd, d)]


def dense_params(cfg):
    d = cfg["hidden_size"]
    layer = sum(a * b for a, b in _attention_shapes(cfg)) + 3 * d * cfg["intermediate_size"] + 2 * d
    embeddings = cfg["vocab_size"] * d * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return cfg["num_hidden_layers"] * layer + d + embeddings


def moe_params(cfg):
    d, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    shared = dense_params(dict(cfg, intermediate_size=0))  # attention, norms, embeddings
    router = layers * d * cfg["num_local_experts"]
    one_expert_all_layers = layers * 3 * d * cfg["intermediate_size"]
    return (shared + router + cfg["num_local_experts"] * one_expert_all_layers,
            shared + router + cfg["num_experts_per_tok"] * one_expert_all_layers)

# %% variant name=training_variant_state_table cell=training
ADAMW_STATE = {"bf16 weight": 2, "bf16 gradient": 2, "fp32 master": 4, "adam m": 4, "adam v": 4}


def training_bytes(n_params, method="full", adapter_params=0):
    per_trained = sum(ADAMW_STATE.values())
    frozen = {"lora": 2.0, "qlora": weight_bytes(1, "nf4")}
    if method == "full":
        return per_trained * n_params
    if method not in frozen:
        raise ValueError(f"no method called {method}")
    return frozen[method] * n_params + per_trained * adapter_params

# %% variant name=audit_variant_dispatch_table cell=audit
def _weights_gb(c):
    cfg = CONFIGS[c["model"]]
    n = moe_params(cfg)[0] if cfg.get("num_local_experts") else dense_params(cfg)
    return weight_bytes(n, c["fmt"]) / 1e9


def audit_claim(claim):
    table = {"weights_gb": _weights_gb,
             "kv_mb_per_token": lambda c: kv_bytes_per_token(CONFIGS[c["model"]], c["bytes_per_value"]) / 1e6,
             "full_ft_max_params_b": lambda c: SPARK_BYTES / training_bytes(1e9, "full")}
    if claim.get("quantity") not in table:
        raise ValueError(f"cannot audit {claim.get('quantity')!r}")
    computed = table[claim["quantity"]](claim)
    rel = claim["claimed"] / computed - 1
    return dict(computed=computed, rel_error=rel, holds=bool(abs(rel) <= 0.1))
