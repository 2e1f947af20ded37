"""Reference low-precision formats for week 02 (instructor only): FP8, E2M1/NVFP4, MXFP4, INT4, FP8 KV cache.

Written independently of the notebook's solutions: FP8 rounding goes through torch's float8 casts, E2M1 through
an explicit table of its eight magnitudes. tests/test_quantization.py checks it against torch and against
hand-computed vectors from the format definitions (and NVIDIA Model Optimizer where it is installed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
FMAX = {"e4m3": 448.0, "e5m2": 57344.0, "e2m1": 6.0}
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # code 0..7 = (exponent << 1) | mantissa


def round_fp8(x: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """Nearest FP8 value (ties to even), saturating at ±max; float64 out."""
    m = FMAX[fmt]
    return x.double().clamp(-m, m).to(FP8_DTYPES[fmt]).double()


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (bit 3 = sign) of the nearest value, ties to the even code, saturating at ±6."""
    x = x.double()
    grid = torch.tensor(E2M1_VALUES, dtype=torch.float64)
    dist = (x.abs().clamp(max=6.0).unsqueeze(-1) - grid).abs()
    best = dist.min(-1, keepdim=True).values
    idx = torch.arange(8)
    score = (dist == best).long() * (2 - idx % 2)  # among the nearest, prefer an even code
    code = score.argmax(-1).to(torch.uint8)
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """Values of 4-bit E2M1 codes, float64."""
    grid = torch.tensor(E2M1_VALUES, dtype=torch.float64)
    c = codes.long()
    mag = grid[c & 7]
    return torch.where((c & 8) != 0, -mag, mag)


def round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value, ties to even, saturating at ±6."""
    return e2m1_decode(e2m1_encode(x))


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dim (even length): element 2i low nibble, 2i+1 high nibble."""
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_fp4`."""
    lo, hi = packed & 15, packed >> 4
    return torch.stack([lo, hi], -1).flatten(-2)


def fp8_qdq(x: torch.Tensor, per_channel: bool = False, fmt: str = "e4m3") -> torch.Tensor:
    """FP8 quantise-dequantise with amax scaling: one scale per tensor, or per row (output channel)."""
    x = x.double()
    amax = x.abs().amax(dim=-1, keepdim=True) if per_channel else x.abs().max()
    scale = torch.where(amax > 0, amax / FMAX[fmt], torch.ones_like(amax))
    return round_fp8(x / scale, fmt) * scale


def sqnr_db(x: torch.Tensor, xhat: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio in dB: 10·log10(Σx² / Σ(x − x̂)²)."""
    x, xhat = x.double(), xhat.double()
    return float(10 * torch.log10((x**2).sum() / ((x - xhat) ** 2).sum()))


def _blocks(w: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """[rows, cols] → [rows, n_blocks, block], each row zero-padded on its own (no block spans two rows)."""
    rows, cols = w.shape
    pad = (-cols) % block
    return F.pad(w.double(), (0, pad)).reshape(rows, -1, block), cols


def nvfp4_quantize(w: torch.Tensor, block: int = 16) -> tuple[torch.Tensor, torch.Tensor, float]:
    """NVFP4 of a 2-D tensor: (packed uint8 [rows, padded_cols/2], E4M3 block scales [rows, n_blocks], FP32 global).

    s_global = amax/(448·6); s_block = E4M3((block_amax/6)/s_global); x ≈ E2M1(x/(s_block·s_global))·s_block·s_global.
    """
    b, _ = _blocks(w, block)
    amax = float(b.abs().max())
    s_global = float(torch.tensor(amax / (448.0 * 6.0) if amax > 0 else 1.0, dtype=torch.float32))
    s_block = round_fp8(b.abs().amax(-1) / 6.0 / s_global, "e4m3")
    scale = (s_block * s_global).unsqueeze(-1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.where(scale > 0, e2m1_encode(b / safe), torch.zeros_like(b, dtype=torch.uint8))
    return pack_fp4(codes.reshape(w.shape[0], -1)), s_block, s_global


def nvfp4_dequantize(packed: torch.Tensor, s_block: torch.Tensor, s_global: float, cols: int,
                     block: int = 16) -> torch.Tensor:
    """Float64 [rows, cols] from :func:`nvfp4_quantize`'s output."""
    vals = e2m1_decode(unpack_fp4(packed)).reshape(packed.shape[0], -1, block)
    return (vals * (s_block * s_global).unsqueeze(-1)).reshape(packed.shape[0], -1)[:, :cols]


def nvfp4_qdq(w: torch.Tensor, block: int = 16) -> torch.Tensor:
    """NVFP4 quantise-dequantise of a 2-D tensor."""
    return nvfp4_dequantize(*nvfp4_quantize(w, block), cols=w.shape[1], block=block)


def mxfp4_qdq(w: torch.Tensor, block: int = 32, rule: str = "ocp") -> torch.Tensor:
    """MXFP4: E2M1 values and a power-of-two (E8M0) scale per 32-element block of each row.

    rule "ocp": 2^(floor(log2 amax) − 2) (OCP MX v1.0, values above 6 saturate);
    rule "ceil": 2^ceil(log2(amax/6)) (Model Optimizer; never saturates).
    """
    b, cols = _blocks(w, block)
    amax = b.abs().amax(-1, keepdim=True)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    if rule == "ocp":
        e = torch.floor(torch.log2(safe)) - 2
    elif rule == "ceil":
        e = torch.ceil(torch.log2(safe / 6.0))
    else:
        raise ValueError(rule)
    scale = torch.exp2(e.clamp(-127, 127))
    out = round_e2m1(b / scale) * scale
    return out.reshape(w.shape[0], -1)[:, :cols]


def int4_qdq(w: torch.Tensor, group: int = 128) -> torch.Tensor:
    """Symmetric INT4 with one scale per group of each row: s = amax/7, q = clamp(round(x/s), −8, 7)."""
    b, cols = _blocks(w, group)
    amax = b.abs().amax(-1, keepdim=True)
    s = torch.where(amax > 0, amax / 7.0, torch.ones_like(amax))
    out = torch.clamp(torch.round(b / s), -8, 7) * s
    return out.reshape(w.shape[0], -1)[:, :cols]


def fake_quantize_linears(model: torch.nn.Module, qdq) -> list[str]:
    """Replace the weight of every nn.Linear inside the decoder layers (not lm_head) by qdq(weight)."""
    done = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            with torch.no_grad():
                mod.weight.copy_(qdq(mod.weight.detach()).to(mod.weight.dtype))
            done.append(name)
    return done


def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of ``ids`` [batch, seq]."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].double()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return float(math.exp(loss))


def fp8_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention with K and V stored in FP8 E4M3, one amax scale each; q, k, v [batch, heads, seq, dim]."""
    kq, vq = fp8_qdq(k), fp8_qdq(v)
    return F.scaled_dot_product_attention(q.double(), kq, vq, is_causal=True)
