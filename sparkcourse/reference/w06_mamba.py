"""Reference answers for 06-mamba: discretisation, the convolution view, the selective scan, a parallel scan,
the Mamba mixer and recurrent-state memory. Checked against scipy and transformers in ``tests/test_mamba.py``.

Shapes follow mamba_ssm's ``selective_scan_ref``: u, delta (batch, d, L); A (d, n); B, C (batch, n, L).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def discretize_zoh(A: torch.Tensor, B: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: Ā = exp(dt·A), B̄ = A⁻¹(Ā − I)B (A invertible)."""
    n = A.shape[-1]
    Abar = torch.linalg.matrix_exp(dt * A)
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    Bbar = torch.linalg.solve(A, (Abar - eye) @ B.reshape(n, -1)).reshape(B.shape)
    return Abar, Bbar


def ssm_recurrent(Abar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Single-input single-output recurrence x_t = Ā x_{t−1} + B̄ u_t, y_t = C·x_t over the last axis of u."""
    x = torch.zeros(*u.shape[:-1], Abar.shape[0], dtype=Abar.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = x @ Abar.T + Bbar * u[..., t, None]
        ys.append(x @ C)
    return torch.stack(ys, -1)


def ssm_kernel(Abar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """The SSM convolution kernel K_k = C Ā^k B̄, k = 0 … L−1."""
    out, v = [], Bbar.clone()
    for _ in range(L):
        out.append(C @ v)
        v = Abar @ v
    return torch.stack(out)


def causal_conv(K: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """y_t = Σ_{k ≤ t} K_k u_{t−k} over the last axis of u (length L = len(K))."""
    L = u.shape[-1]
    flat = u.reshape(-1, 1, L)
    y = F.conv1d(F.pad(flat, (L - 1, 0)), K.flip(0).reshape(1, 1, -1))
    return y.reshape(u.shape)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Sequential selective scan (Mamba); returns (y (batch, d, L), last state (batch, d, n))."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    delta = F.softplus(delta)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=dA.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = dA[:, :, t] * x + dBu[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, t]))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x


def sequential_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x_t = a_t x_{t−1} + b_t along the last axis, x_{−1} = 0, one step per position."""
    x = torch.zeros_like(b[..., 0])
    out = []
    for t in range(b.shape[-1]):
        x = a[..., t] * x + b[..., t]
        out.append(x)
    return torch.stack(out, -1)


def parallel_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence in ⌈log2 L⌉ Hillis–Steele steps with the operator (a1,b1)∘(a2,b2) = (a1a2, a2b1+b2)."""
    L, s = b.shape[-1], 1
    while s < L:
        b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1)
        a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1)
        s *= 2
    return b


def mamba_mixer(x: torch.Tensor, sd: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A MambaMixer forward (no cache) from its state dict: x (batch, L, hidden) -> (batch, L, hidden)."""
    d = sd["D"].shape[0]
    n = sd["A_log"].shape[1]
    rank = sd["dt_proj.weight"].shape[1]
    k = sd["conv1d.weight"].shape[-1]
    L = x.shape[1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, z = xz[:, :d], xz[:, d:]
    h = F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L]
    h = F.silu(h)
    dt, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    delta = F.linear(dt, sd["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(sd["A_log"])
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"])
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))


def recurrent_state_bytes(cfg: Mapping, batch: int = 1, bytes_per_value: float = 2.0) -> float:
    """Bytes of a Mamba model's inference state: per layer a conv state (d_inner × kernel) and an SSM state
    (d_inner × state_size), for each sequence; independent of the context length."""
    d_inner = int(cfg.get("expand", 2) * cfg["hidden_size"])
    per_layer = d_inner * (cfg["conv_kernel"] + cfg["state_size"])
    return cfg["num_hidden_layers"] * per_layer * batch * bytes_per_value


def kv_cache_bytes(cfg: Mapping, context: int, batch: int = 1, bytes_per_value: float = 2.0) -> float:
    """Bytes of a Llama-style KV cache for ``batch`` sequences of ``context`` tokens."""
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * kv_heads * hd * context * batch * bytes_per_value
