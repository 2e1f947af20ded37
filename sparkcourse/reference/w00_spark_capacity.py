"""Reference answers for 00-spark-capacity, in the notebook's signatures, backed by ``sparkcourse.capacity``."""

from __future__ import annotations

from collections.abc import Mapping

from sparkcourse import capacity

GB, MB = 1e9, 1e6


def bits_per_param(fmt: str, group_size: int | None = None) -> float:
    """Stored bits per parameter, block-scale overhead included."""
    return capacity.bits_per_param(fmt, group_size)


def weight_bytes(n_params: float, fmt: str, group_size: int | None = None) -> float:
    """Bytes of ``n_params`` weights in ``fmt``."""
    return capacity.weight_bytes(n_params, fmt, group_size)


def dense_params(cfg: Mapping) -> int:
    """Parameters of a Llama-style dense config."""
    return capacity.param_count({**cfg, "model_type": "llama"}).total


def moe_params(cfg: Mapping) -> tuple[int, int]:
    """(total, active) parameters of a Mixtral-style config."""
    count = capacity.param_count({**cfg, "model_type": "mixtral"})
    return count.total, count.active


def kv_bytes_per_token(cfg: Mapping, bytes_per_value: float = 2.0) -> float:
    """KV-cache bytes per token."""
    return capacity.kv_bytes_per_token({**cfg, "model_type": "llama"}, bytes_per_value)


def max_context(budget_bytes: float, cfg: Mapping, weight_fmt: str = "bf16", kv_bytes_per_value: float = 2.0,
                batch: int = 1) -> int:
    """Longest context whose weights and KV cache (for ``batch`` sequences) fit the budget."""
    return capacity.max_context(budget_bytes, {**cfg, "model_type": "llama"}, weight_fmt, kv_bytes_per_value, batch)


def training_bytes(n_params: float, method: str = "full", adapter_params: float = 0.0) -> float:
    """Training memory before activations."""
    return capacity.training_bytes(n_params, method, adapter_params)


def audit_claim(claim: Mapping, configs: Mapping[str, Mapping], budget_bytes: float) -> dict:
    """The computed value of a circulating claim, its relative error and whether it holds (within 10%)."""
    q = claim["quantity"]
    if q == "weights_gb":
        value = capacity.weight_bytes(capacity.param_count(configs[claim["model"]]).total, claim["fmt"]) / GB
    elif q == "kv_mb_per_token":
        value = capacity.kv_bytes_per_token(configs[claim["model"]], claim["bytes_per_value"]) / MB
    elif q == "full_ft_max_params_b":
        value = budget_bytes / capacity.training_bytes(1.0, "full") / 1e9
    else:
        raise ValueError(f"unknown quantity {q!r}")
    rel = (claim["claimed"] - value) / value
    return {"computed": value, "rel_error": rel, "holds": abs(rel) <= 0.10}
