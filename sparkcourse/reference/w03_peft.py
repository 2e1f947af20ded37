"""Instructor reference for week 03-peft (LoRA, DoRA, NEFTune, QLoRA). Hidden tests compare with it;
tests/test_peft_week.py checks it against PEFT, transformers and bitsandbytes."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = base(x) + (alpha/r) · x Aᵀ Bᵀ with A [r, in] (Kaiming-uniform, as PEFT), B [out, r] zero; base frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.base, self.r, self.alpha, self.scaling = base, r, alpha, alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * ((x.to(self.A.dtype) @ self.A.T) @ self.B.T)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.delta_weight()


class DoRALinear(LoRALinear):
    """W' = m ⊙ (W0 + sBA) / ‖W0 + sBA‖ (row norms, detached; m initialised to the row norms)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dtype: torch.dtype = torch.float32):
        super().__init__(base, r, alpha, dtype)
        with torch.no_grad():
            self.m = nn.Parameter(torch.linalg.norm(base.weight.to(dtype) + self.delta_weight(), dim=1))

    def weight_norm(self) -> torch.Tensor:
        return torch.linalg.norm(self.base.weight + self.delta_weight(), dim=1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.base.weight + self.delta_weight()
        y = x @ ((self.m / self.weight_norm())[:, None] * w).T
        return y if self.base.bias is None else y + self.base.bias

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        w = self.base.weight + self.delta_weight()
        return (self.m / torch.linalg.norm(w, dim=1))[:, None] * w


def _linear_shapes(cfg: Mapping) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection of a Llama-style decoder layer."""
    h = cfg["hidden_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = cfg["num_attention_heads"] * hd
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    i = cfg["intermediate_size"]
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def adapter_param_count(cfg: Mapping, r: int, targets, dora: bool = False) -> int:
    """Trainable parameters of LoRA (DoRA: plus one magnitude per output row) on `targets` of every layer."""
    shapes = _linear_shapes(cfg)
    per_layer = sum(r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if dora else 0) for t in targets)
    return cfg["num_hidden_layers"] * per_layer


def make_neftune_hook(alpha: float):
    """Forward hook adding Uniform(-1, 1)·alpha/sqrt(L·d) to the embeddings, in training mode only (L padded)."""

    def hook(module, inputs, output):
        if not module.training:
            return output
        L, d = output.shape[-2], output.shape[-1]
        mag = alpha / math.sqrt(L * d)
        return output + torch.empty_like(output).uniform_(-mag, mag)

    return hook


def to_nf4(linear: nn.Linear, double_quant: bool = True, compute_dtype: torch.dtype = torch.float32):
    """A frozen bitsandbytes NF4 Linear4bit holding `linear`'s weights (quantised on the CPU), trap flag off."""
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=compute_dtype, compress_statistics=double_quant, quant_type="nf4")
    q.load_state_dict({k: v.detach().float() for k, v in linear.state_dict().items()})
    q = q.to("cpu")
    q.support_avx512bf16_for_cpu = False
    for p in q.parameters():
        p.requires_grad_(False)
    return q


def nf4_weight_bytes(layer) -> int:
    """Bytes of a Linear4bit's frozen weight: packed codes, block absmax, and (double quant) the second level."""
    qs = layer.weight.quant_state
    total = layer.weight.data.numel() * layer.weight.data.element_size()
    total += qs.absmax.numel() * qs.absmax.element_size()
    if qs.nested:
        total += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
        total += qs.offset.numel() * qs.offset.element_size()
    return total


def dequantize(layer) -> torch.Tensor:
    """The float weight a Linear4bit computes with."""
    import bitsandbytes.functional as bf

    return bf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()


def qlora_linear(linear: nn.Linear, r: int, alpha: float) -> LoRALinear:
    return LoRALinear(to_nf4(linear), r, alpha, dtype=torch.float32)
