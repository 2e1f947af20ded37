"""The memory planner: bytes per parameter by format, parameter counts from configs, KV cache, training memory.

Units: bytes, and decimal GB (1e9 bytes) as NVIDIA quotes the DGX Spark's 128 GB.
Sources for every constant are in the docstrings; the course's tests check them against libraries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

GB = 1e9
SPARK_MEMORY_BYTES = 128 * GB  # NVIDIA DGX Spark: 128 GB LPDDR5x unified memory (spec sheet)
SPARK_BANDWIDTH = 273e9  # bytes/s, spec sheet

# Bits per stored element of each format, with its scale overhead.
#   nvfp4: E2M1 values + one E4M3 scale per 16 elements (+ one FP32 per tensor, negligible per element)
#   mxfp4: E2M1 values + one E8M0 scale per 32 elements (OCP MX spec v1.0)
#   int4 : 4-bit integers + one FP16 scale per group (GPTQ/AWQ style, symmetric; group_size default 128)
#   nf4  : bitsandbytes NF4, blocks of 64 with double quantisation: an FP8 absmax per 64 values,
#          and an FP32 scale per 256 of those (QLoRA paper, §2: 8/64 + 32/(64·256) = 0.127 bits)
_PLAIN_BITS = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "fp8": 8.0, "int8": 8.0}
FORMATS = ("fp32", "fp16", "bf16", "fp8", "int8", "nvfp4", "mxfp4", "int4", "nf4")


def bits_per_param(fmt: str, group_size: int | None = None, double_quant: bool = True) -> float:
    """Stored bits per parameter of ``fmt``, block-scale overhead included."""
    fmt = fmt.lower()
    if fmt in _PLAIN_BITS:
        return _PLAIN_BITS[fmt]
    if fmt == "nvfp4":
        return 4 + 8 / (group_size or 16)
    if fmt == "mxfp4":
        return 4 + 8 / (group_size or 32)
    if fmt == "int4":
        return 4 + 16 / (group_size or 128)
    if fmt == "nf4":
        block = group_size or 64
        return 4 + (8 / block + 32 / (block * 256) if double_quant else 32 / block)
    raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")


def bytes_per_param(fmt: str, group_size: int | None = None) -> float:
    """Stored bytes per parameter of ``fmt``."""
    return bits_per_param(fmt, group_size) / 8


def weight_bytes(n_params: float, fmt: str, group_size: int | None = None) -> float:
    """Bytes to hold ``n_params`` weights in ``fmt``."""
    return n_params * bytes_per_param(fmt, group_size)


# Public config.json values of real models (the fields the planner needs).
CONFIGS: dict[str, dict] = {
    "meta-llama/Meta-Llama-3-8B": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
        max_position_embeddings=8192,
    ),
    "meta-llama/Meta-Llama-3-70B": dict(
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672,
        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False,
        max_position_embeddings=8192,
    ),
    "mistralai/Mixtral-8x7B-v0.1": dict(
        model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=32768,
    ),
    "deepseek-ai/DeepSeek-V3": dict(
        model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
        moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
        n_shared_experts=1, n_routed_experts=256, num_experts_per_tok=8, first_k_dense_replace=3,
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        tie_word_embeddings=False, max_position_embeddings=163840,
    ),
}


@dataclass(frozen=True)
class ParamCount:
    """Total parameters and those active for one token (equal for dense models)."""

    total: int
    active: int


def _head_dim(cfg: Mapping) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def _gqa_attention(cfg: Mapping) -> int:
    h, hd = cfg["hidden_size"], _head_dim(cfg)
    q = h * cfg["num_attention_heads"] * hd
    kv = 2 * h * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    return q + kv + cfg["num_attention_heads"] * hd * h


def _mla_attention(cfg: Mapping) -> int:
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    q = h * cfg["q_lora_rank"] + cfg["q_lora_rank"] + cfg["q_lora_rank"] * nh * qk
    kv = (h * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) + cfg["kv_lora_rank"]
          + cfg["kv_lora_rank"] * nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]))
    return q + kv + nh * cfg["v_head_dim"] * h


def param_count(cfg: Mapping) -> ParamCount:
    """Parameters of a Llama, Mistral, Mixtral or DeepSeek-V3 config (transformers' modules, biases none)."""
    kind = cfg.get("model_type", "llama")
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    norms = layers * 2 * h + h
    swiglu = 3 * h  # gate, up and down projections, times the intermediate size
    if kind in ("llama", "mistral"):
        per_layer = _gqa_attention(cfg) + swiglu * cfg["intermediate_size"]
        total = embed + norms + layers * per_layer
        return ParamCount(total, total)
    if kind == "mixtral":
        n_exp, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
        expert = swiglu * cfg["intermediate_size"]
        shared = layers * (_gqa_attention(cfg) + h * n_exp)  # attention and router
        base = embed + norms + shared
        return ParamCount(base + layers * n_exp * expert, base + layers * k * expert)
    if kind == "deepseek_v3":
        dense_layers = cfg["first_k_dense_replace"]
        moe_layers = layers - dense_layers
        expert = swiglu * cfg["moe_intermediate_size"]
        n_exp, k, n_shared = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["n_shared_experts"]
        router = n_exp * h  # the gate (its score-correction bias is a buffer in transformers)
        base = (embed + norms + layers * _mla_attention(cfg) + dense_layers * swiglu * cfg["intermediate_size"]
                + moe_layers * (router + n_shared * expert))
        return ParamCount(base + moe_layers * n_exp * expert, base + moe_layers * k * expert)
    raise ValueError(f"unsupported model_type {kind!r}")


def kv_bytes_per_token(cfg: Mapping, bytes_per_value: float = 2.0) -> float:
    """KV-cache bytes per token: K and V, every layer, KV heads × head dim (MLA: the compressed latent)."""
    layers = cfg["num_hidden_layers"]
    if cfg.get("model_type") == "deepseek_v3":  # MLA caches the latent and the shared RoPE key
        return layers * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * bytes_per_value
    kv_heads = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    return 2 * layers * kv_heads * _head_dim(cfg) * bytes_per_value


def max_context(budget_bytes: float, cfg: Mapping, weight_format: str = "bf16",
                kv_bytes_per_value: float = 2.0, batch: int = 1) -> int:
    """Longest context (tokens per sequence) whose weights plus KV cache fit in ``budget_bytes``; 0 if none."""
    free = budget_bytes - weight_bytes(param_count(cfg).total, weight_format)
    per_token = kv_bytes_per_token(cfg, kv_bytes_per_value) * batch
    return max(0, math.floor(free / per_token))


def usable_context(budget_bytes: float, cfg: Mapping, weight_format: str = "bf16",
                   kv_bytes_per_value: float = 2.0, batch: int = 1, reserve_bytes: float = 0.0) -> int:
    """:func:`max_context` after a reserve (OS, CUDA context, activations), capped at the trained context.

    A context that fits in memory is not one the model supports: ``max_position_embeddings`` (when the config
    has it) is the longest the model was trained for.
    """
    ctx = max_context(budget_bytes - reserve_bytes, cfg, weight_format, kv_bytes_per_value, batch)
    trained = cfg.get("max_position_embeddings")
    return min(ctx, int(trained)) if trained else ctx


# Training: bytes per parameter before activations (mixed precision, AdamW).
#   full fine-tuning: bf16 weights 2 + bf16 grads 2 + fp32 master weights 4 + Adam m 4 + v 4 = 16
ADAMW_MIXED_BYTES = 16.0


def lora_params(cfg: Mapping, r: int, targets: tuple[str, ...] = ("q", "k", "v", "o")) -> int:
    """Adapter parameters of rank ``r`` on the attention projections of a GQA config: r·(in + out) each."""
    h, hd = cfg["hidden_size"], _head_dim(cfg)
    q_out = cfg["num_attention_heads"] * hd
    kv_out = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    shapes = {"q": (h, q_out), "k": (h, kv_out), "v": (h, kv_out), "o": (q_out, h),
              "gate": (h, cfg["intermediate_size"]), "up": (h, cfg["intermediate_size"]),
              "down": (cfg["intermediate_size"], h)}
    return cfg["num_hidden_layers"] * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def training_bytes(n_params: float, method: str = "full", adapter_params: float = 0.0) -> float:
    """Weights, gradients and AdamW state for ``full``, ``lora`` (bf16 base) or ``qlora`` (NF4 base); no activations."""
    method = method.lower()
    if method == "full":
        return n_params * ADAMW_MIXED_BYTES
    adapters = adapter_params * ADAMW_MIXED_BYTES
    if method == "lora":
        return n_params * bytes_per_param("bf16") + adapters
    if method == "qlora":
        return n_params * bytes_per_param("nf4") + adapters
    raise ValueError(f"unknown method {method!r}; expected full, lora or qlora")


def largest_trainable(budget_bytes: float = SPARK_MEMORY_BYTES, method: str = "full") -> float:
    """Most parameters whose training state fits the budget (adapters ignored), before activations."""
    return budget_bytes / training_bytes(1.0, method)


def decode_tokens_per_s_ceiling(weight_bytes_read: float, bandwidth: float = SPARK_BANDWIDTH) -> float:
    """Upper bound on batch-1 decode speed: every token reads every active weight once."""
    return bandwidth / weight_bytes_read
