"""Reference answers for 08-moe: the top-k router, a sparse MoE layer, expert capacity and token dropping, the
load-balancing and z losses, shared + fine-grained experts. Checked against transformers (Mixtral, Switch
Transformers, DeepSeek-V2) in ``tests/weeks/test_w08_moe.py``.

Expert weights use transformers' layout: ``gate_up_proj`` ``(E, 2I, H)`` (gate rows first), ``down_proj``
``(E, H, I)``; the router's ``weight`` is ``(E, H)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F


def route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral's router on ``(T, E)`` logits: softmax over experts, top-k, renormalise; (weights, indices)."""
    probs = torch.softmax(logits, dim=-1)
    top, idx = torch.topk(probs, k, dim=-1)
    return top / top.sum(-1, keepdim=True), idx


def _experts(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor,
             idx: torch.Tensor) -> torch.Tensor:
    """Sum over the chosen experts of weight · down(silu(gate x) * up x), for flat tokens ``x`` (T, H)."""
    out = torch.zeros_like(x)
    inter = down.shape[-1]
    for e in range(gate_up.shape[0]):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        h = x[tok] @ gate_up[e].T
        y = (F.silu(h[:, :inter]) * h[:, inter:]) @ down[e].T
        out.index_add_(0, tok, y * weights[tok, slot, None])
    return out


def sparse_moe(x: torch.Tensor, sd: Mapping[str, torch.Tensor], top_k: int) -> torch.Tensor:
    """MixtralSparseMoeBlock's forward from its state dict: ``(..., H)`` -> ``(..., H)``."""
    flat = x.reshape(-1, x.shape[-1])
    weights, idx = route(flat @ sd["gate.weight"].T, top_k)
    return _experts(flat, sd["experts.gate_up_proj"], sd["experts.down_proj"], weights, idx).reshape(x.shape)


def expert_capacity(num_tokens: int, num_experts: int, capacity_factor: float, top_k: int = 1) -> int:
    """Slots per expert: ceil(top_k · capacity_factor · num_tokens / num_experts) (DeepSpeed's rounding), ≥ 1."""
    return max(1, math.ceil(top_k * capacity_factor * num_tokens / num_experts))


def dispatch_top1(expert_index: torch.Tensor, num_experts: int, capacity: int) -> tuple[torch.Tensor, int]:
    """Top-1 dispatch with capacity, per group (row) in token order: (kept mask like expert_index, dropped count)."""
    onehot = F.one_hot(expert_index, num_experts)
    position = torch.cumsum(onehot, dim=-2) * onehot  # 1-based arrival order at the chosen expert
    kept = position.sum(-1) <= capacity
    return kept, int((~kept).sum())


def load_balancing_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """N · Σ_i f_i · P_i for one layer's ``(T, N)`` logits; f_i = share of tokens with i in their top-k."""
    n = router_logits.shape[-1]
    probs = torch.softmax(router_logits, dim=-1)
    chosen = torch.topk(probs, top_k, dim=-1).indices
    f = F.one_hot(chosen, n).sum(1).to(probs.dtype).mean(0)
    return n * (f * probs.mean(0)).sum()


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)² (any leading axes)."""
    return torch.logsumexp(router_logits, dim=-1).pow(2).mean()


def deepseek_moe(x: torch.Tensor, sd: Mapping[str, torch.Tensor], top_k: int,
                 routed_scaling_factor: float = 1.0) -> torch.Tensor:
    """DeepSeekMoE (V2 greedy): softmax top-k without renormalisation, times the scaling factor, plus the shared
    experts (one SwiGLU MLP) applied to every token."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(flat @ sd["gate.weight"].T, dim=-1)
    weights, idx = torch.topk(probs, top_k, dim=-1)
    routed = _experts(flat, sd["experts.gate_up_proj"], sd["experts.down_proj"], weights * routed_scaling_factor,
                      idx)
    shared = (F.silu(flat @ sd["shared_experts.gate_proj.weight"].T) * (flat @ sd["shared_experts.up_proj.weight"].T)
              ) @ sd["shared_experts.down_proj.weight"].T
    return (routed + shared).reshape(x.shape)
