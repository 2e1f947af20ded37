# %% markdown
# # Week 02 — FP8 and NVFP4: Blackwell's native formats, implemented, measured and compared
#
# The Blackwell GPU in a DGX Spark has tensor cores for **FP8** and **FP4**: NVIDIA's "1 PFLOP" figure for the
# Spark is FP4 (with sparsity). Week 00's planner showed what the formats buy in memory — Llama-3-70B needs about
# 141 GB in BF16 but about 40 GB in NVFP4 — and, because batch-1 decoding reads every weight once per token, in
# speed too. This week you build the formats bit by bit and measure what they cost in accuracy.
#
# **You will learn to**
# 1. round to E4M3, E5M2 and E2M1 by hand (round to nearest, ties to even, saturation) and match torch's casts;
# 2. quantise to FP8 with amax scaling, per tensor and per channel, and measure MSE and SQNR;
# 3. implement NVFP4 (16-element blocks, E4M3 block scales, an FP32 tensor scale), pack two values per byte,
#    and compare it with MXFP4 (E8M0 power-of-two scales) and INT4 with group scales;
# 4. fake-quantise a small LM's linear layers and measure perplexity, layer by layer;
# 5. store a KV cache in FP8 and measure the error it causes in attention outputs;
# 6. run FP8 and NVFP4 products of your own tensors on the tensor cores (`torch._scaled_mm`), and know the
#    production route (TensorRT Model Optimizer, TensorRT-LLM).
#
# **Time:** about 2 hours. **Points:** 16, all autograded (the GPU benchmark and the LM study are not graded).
#
# The 141 GB and 40 GB above come from `sparkcourse.capacity` (week 00) and are printed in the set-up cell.

# %% setup id=setup
import math

import torch
import torch.nn.functional as F

import sparkcourse as sc
from sparkcourse import capacity
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
from sparkcourse.models import random_llama  # seeded small Llamas with random weights: no download

torch.set_default_dtype(torch.float32)
GB = 1e9
_n70 = capacity.param_count(capacity.CONFIGS["meta-llama/Meta-Llama-3-70B"]).total
print(f"Llama-3-70B: BF16 {capacity.weight_bytes(_n70, 'bf16') / GB:.1f} GB, "
      f"NVFP4 {capacity.weight_bytes(_n70, 'nvfp4') / GB:.1f} GB")

# %% markdown
# ## 1. Floating-point formats by hand
#
# A float with $e$ exponent bits (bias $b$) and $m$ mantissa bits stores $x = \pm 2^{E-b}(1 + M/2^m)$ for
# $E \ge 1$ and the subnormals $\pm 2^{1-b} \cdot M/2^m$ for $E = 0$. Rounding a real number to the format:
#
# 1. take the binade $k = \lfloor \log_2 |x| \rfloor$, but never below the smallest normal exponent $1-b$;
# 2. the spacing there is $2^{k-m}$: round $|x| / 2^{k-m}$ to the nearest integer, **ties to even**;
# 3. **saturate**: anything beyond the largest finite value becomes that value (what quantisation wants —
#    an overflow to NaN or inf would destroy a whole matrix product).
#
# | format | bits | bias | largest finite | smallest subnormal | special values |
# |---|---|---|---|---|---|
# | E4M3 (`float8_e4m3fn`) | 1-4-3 | 7 | 448 | $2^{-9}$ | NaN only (S.1111.111) — no inf |
# | E5M2 (`float8_e5m2`) | 1-5-2 | 15 | 57344 | $2^{-16}$ | inf and NaN, like IEEE |
# | E2M1 (FP4) | 1-2-1 | 1 | 6 | 0.5 | none: the 8 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 |
#
# **Why two FP8 formats?** The FP8 training recipe (Micikevicius et al., *FP8 Formats for Deep Learning*, 2022;
# NVIDIA Transformer Engine) uses **E4M3 for the forward pass** (weights and activations: precision matters, the
# range is tamed by scaling) and **E5M2 for the backward pass** (gradients: they span many more binades than they
# need mantissa bits, and E5M2 reaches 2⁻¹⁶…57344). Each tensor gets an FP32 scale from its amax: **delayed
# scaling** takes it from a history of amaxes of previous steps (cheap, one step stale — an outlier overflows),
# **current scaling** from the tensor itself (one more pass over it). **MXFP8** (OCP Microscaling; Blackwell's
# tensor cores run it natively) goes finer: a power-of-two E8M0 scale per 32 values, so E4M3 serves gradients too.
# Inference needs only E4M3.
#
# The largest finite values are `torch.finfo(torch.float8_e4m3fn).max` and `torch.finfo(torch.float8_e5m2).max`:

# %%
for dt in (torch.float8_e4m3fn, torch.float8_e5m2):
    fi = torch.finfo(dt)
    print(f"{str(dt):22s} max {fi.max:8g}  smallest normal {fi.smallest_normal:.3g}  eps {fi.eps}")
x = torch.tensor([0.3, 1.0625, 1.1875, 300.0, 460.0, 1e5])
print("E4M3:", x.to(torch.float8_e4m3fn).float().tolist())
print("E5M2:", x.to(torch.float8_e5m2).float().tolist(), "<- E5M2 overflows to inf in a plain cast")

# %% markdown
# ### Exercise 1 (4 points)
# Write `round_to_format(x, fmt)` for `fmt` in `"e4m3", "e5m2", "e2m1"` (raise `ValueError` otherwise): the
# nearest value of the format, ties to even, saturating at ± the largest finite value, as a float64 tensor.
# Use arithmetic (`torch.floor`, `torch.log2`, `torch.round` — which rounds half to even), not torch's float8
# casts: the hidden tests compare you with those casts.
#
# Then the 4-bit codes of E2M1: bit 3 is the sign, bits 2–1 the exponent, bit 0 the mantissa, so the magnitude
# codes 0…7 are exactly 0, 0.5, 1, 1.5, 2, 3, 4, 6 in order. Write `e2m1_encode(x)` (uint8 codes of
# `round_to_format(x, "e2m1")`; the sign bit is the sign bit of `x`, as in IEEE formats: −0.0 and a negative
# that rounds to zero encode as −0, code 8), `e2m1_decode(codes)` (float64 values),
# and `pack_fp4(codes)` / `unpack_fp4(packed)`: two codes per byte along the last dimension (even length),
# element $2i$ in the **low** nibble and $2i+1$ in the high nibble — the layout of Model Optimizer's NVFP4.

# %% solution id=formats
FORMAT_BITS = {"e4m3": (4, 3, 7, 448.0), "e5m2": (5, 2, 15, 57344.0), "e2m1": (2, 1, 1, 6.0)}


def round_to_format(x, fmt):
    """Nearest value of `fmt` (ties to even, saturating), float64."""
    ### BEGIN SOLUTION
    if fmt not in FORMAT_BITS:
        raise ValueError(f"unknown format {fmt!r}")
    _, m, bias, fmax = FORMAT_BITS[fmt]
    x = torch.as_tensor(x, dtype=torch.float64)
    a = x.abs()
    k = torch.floor(torch.log2(torch.where(a > 0, a, torch.ones_like(a)))).clamp(min=1 - bias)
    step = torch.exp2(k - m)
    r = torch.round(a / step) * step
    return torch.copysign(r.clamp(max=fmax), x)
    ### END SOLUTION


def e2m1_encode(x):
    """uint8 E2M1 codes (bit 3 = sign) of x rounded to E2M1."""
    ### BEGIN SOLUTION
    x = torch.as_tensor(x, dtype=torch.float64)
    mag = round_to_format(x, "e2m1").abs()
    code = torch.where(mag < 1, mag * 2, torch.where(mag < 2, mag * 2, torch.where(mag < 4, mag + 2, mag / 2 + 4)))
    return code.to(torch.uint8) | (torch.signbit(x).to(torch.uint8) << 3)
    ### END SOLUTION


def e2m1_decode(codes):
    """float64 values of uint8 E2M1 codes."""
    ### BEGIN SOLUTION
    c = codes.long()
    e, mbit = (c >> 1) & 3, c & 1
    mag = torch.where(e == 0, 0.5 * mbit, torch.exp2(e - 1.0) * (1 + 0.5 * mbit)).double()
    return torch.where(c >= 8, -mag, mag)
    ### END SOLUTION


def pack_fp4(codes):
    """Two 4-bit codes per byte: element 2i low nibble, 2i+1 high nibble."""
    ### BEGIN SOLUTION
    c = codes.to(torch.uint8)
    return (c[..., ::2] & 15) + ((c[..., 1::2] & 15) << 4)
    ### END SOLUTION


def unpack_fp4(packed):
    """Inverse of pack_fp4."""
    ### BEGIN SOLUTION
    out = torch.empty(*packed.shape[:-1], 2 * packed.shape[-1], dtype=torch.uint8)
    out[..., ::2] = packed & 15
    out[..., 1::2] = packed >> 4
    return out
    ### END SOLUTION

# %% tests id=test_round_fp8 points=2
got = round_to_format(torch.tensor([1.0, 1.0625, 1.1875, 500.0, -1e6]), "e4m3")
check_property(got.dtype == torch.float64, f"round_to_format should return float64, got {got.dtype}")
check_close(got[:3], torch.tensor([1.0, 1.0, 1.25]), name="E4M3 of [1, 1.0625, 1.1875] (ties go to the even mantissa)")
check_close(got[3:], torch.tensor([448.0, -448.0]), name="E4M3 of [500, -1e6] (saturate at ±448)")
try:
    round_to_format(torch.ones(2), "e3m4")
    raise AssertionError('round_to_format(x, "e3m4") should raise ValueError')
except ValueError:
    pass
### BEGIN HIDDEN TESTS
import torch

g = torch.Generator().manual_seed(20)
for fmt, dt, fmax in (("e4m3", torch.float8_e4m3fn, 448.0), ("e5m2", torch.float8_e5m2, 57344.0)):
    x = torch.cat([torch.randn(997, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-6, 5, (997,), generator=g),
                   torch.tensor([0.0, -0.0, fmax, 1.5 * fmax, -3 * fmax, 2.0**-17, 3 * 2.0**-10, 5 * 2.0**-18])])
    # exact ties: midpoints between neighbouring representable values
    grid = torch.arange(0, 256, dtype=torch.uint8).view(dt).double()
    grid = grid[torch.isfinite(grid)].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    x = torch.cat([x, mids[::3], -mids[1::5]])
    want = x.clamp(-fmax, fmax).to(dt).double()
    check_close(round_to_format(x, fmt), want, rtol=0, atol=0, name=f"round_to_format(x, {fmt!r}) vs torch's {dt}")
### END HIDDEN TESTS

# %% tests id=test_round_e2m1 points=1
check_close(round_to_format(torch.tensor([0.25, 0.75, 2.5, 5.0, 7.0, -100.0]), "e2m1"),
            torch.tensor([0.0, 1.0, 2.0, 4.0, 6.0, -6.0]), name="E2M1 of [0.25, 0.75, 2.5, 5, 7, -100]")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(21)
x = torch.cat([torch.randn(2001, generator=g, dtype=torch.float64) * 3,
               torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 6.5, 7.0, 9.0, -0.25, -1.25, -3.5, -5.0])])
check_close(round_to_format(x, "e2m1"), ref.round_e2m1(x), rtol=0, atol=0, name="round_to_format(x, 'e2m1')")
### END HIDDEN TESTS

# %% tests id=test_fp4_codes points=1
codes = e2m1_encode(torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -6.0]))
check_close(codes.long(), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 15]), rtol=0, name="e2m1_encode of the grid")
check_close(e2m1_encode(torch.tensor([-0.0, -0.1, 0.1, 0.0])).long(), torch.tensor([8, 8, 0, 0]), rtol=0,
            name="e2m1_encode of [-0.0, -0.1, 0.1, 0.0] (a negative keeps its sign bit when it rounds to zero)")
check_close(pack_fp4(torch.tensor([1, 2, 3, 4], dtype=torch.uint8)).long(), torch.tensor([0x21, 0x43]), rtol=0,
            name="pack_fp4([1, 2, 3, 4]) (element 0 in the low nibble)")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(22)
x = torch.randn(7, 38, generator=g, dtype=torch.float64) * 4
x[0, :6] = torch.tensor([-0.0, 0.0, -0.2, -0.25, 0.25, -1e-30])
check_close(e2m1_encode(x).long(), ref.e2m1_encode(x).long(), rtol=0, name="e2m1_encode(x)")
allc = torch.arange(16, dtype=torch.uint8)
check_close(e2m1_decode(allc), ref.e2m1_decode(allc), rtol=0, name="e2m1_decode of all 16 codes")
c = torch.randint(0, 16, (5, 22), generator=g, dtype=torch.uint8)
check_close(pack_fp4(c).long(), ref.pack_fp4(c).long(), rtol=0, name="pack_fp4 on a [5, 22] tensor")
check_close(unpack_fp4(ref.pack_fp4(c)).long(), c.long(), rtol=0, name="unpack_fp4(pack(c)) == c")
### END HIDDEN TESTS

# %% markdown
# ## 2. FP8 with amax scaling
#
# FP8's range is small (E4M3: ±448, and only 3 mantissa bits), so tensors are **scaled** into it:
# $s = \mathrm{amax}/448$, $q = \mathrm{E4M3}(x/s)$, $\hat x = q \cdot s$. One scale per **tensor** is the portable
# choice: every FP8 kernel takes it, `torch._scaled_mm` on every FP8 GPU included. One per **output channel** (row
# of a `[out, in]` weight) follows each row's range; `torch._scaled_mm` also accepts such **row-wise** scales
# (`[M, 1]` for the activations, `[1, N]` for the weight) on the GPUs and builds that support them, and block
# scales are the next step (Section 3).
# The quality measure is the signal-to-quantisation-noise ratio
# $\mathrm{SQNR} = 10 \log_{10} \frac{\sum x^2}{\sum (x - \hat x)^2}$ dB.
#
# ### Exercise 2 (3 points)
# Write `fp8_qdq(x, per_channel=False, fmt="e4m3")` — quantise and dequantise with amax scaling (per row of a
# 2-D `x` when `per_channel`; a scale of 1 where the amax is 0), float64 out — and `sqnr_db(x, xhat)`.

# %% solution id=fp8
def fp8_qdq(x, per_channel=False, fmt="e4m3"):
    """FP8 quantise-dequantise with amax scaling, float64."""
    ### BEGIN SOLUTION
    x = x.double()
    fmax = FORMAT_BITS[fmt][3]
    amax = x.abs().amax(dim=1, keepdim=True) if per_channel else x.abs().max()
    scale = torch.where(amax > 0, amax / fmax, 1.0)
    return round_to_format(x / scale, fmt) * scale
    ### END SOLUTION


def sqnr_db(x, xhat):
    """10·log10(Σx² / Σ(x − x̂)²)."""
    ### BEGIN SOLUTION
    x, xhat = x.double(), xhat.double()
    return float(10 * torch.log10(x.pow(2).sum() / (x - xhat).pow(2).sum()))
    ### END SOLUTION

# %% tests id=test_fp8_qdq points=2
w = torch.randn(8, 40, generator=torch.Generator().manual_seed(0)) * 0.02
wq = fp8_qdq(w)
check_property(wq.shape == w.shape, f"fp8_qdq changed the shape: {tuple(wq.shape)}")
check_number(wq.abs().max(), w.abs().max().item(), rtol=1e-6, name="the largest |value| (amax maps to 448 exactly)")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(23)
for shape, s in (((13, 37), 0.02), ((5, 129), 3000.0), ((31, 7), 1e-5)):
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * s
    x[shape[0] // 2] *= 50  # one loud channel
    for pc in (False, True):
        for fmt in ("e4m3", "e5m2"):
            check_close(fp8_qdq(x, pc, fmt), ref.fp8_qdq(x, pc, fmt), rtol=1e-12, atol=0,
                        name=f"fp8_qdq(x{shape}, per_channel={pc}, fmt={fmt!r})")
z = torch.zeros(3, 5, dtype=torch.float64)
z[1] = torch.linspace(-2, 2, 5)
check_close(fp8_qdq(z, True), ref.fp8_qdq(z, True), rtol=1e-12, name="per-channel with all-zero rows")
### END HIDDEN TESTS

# %% tests id=test_sqnr points=1
check_number(sqnr_db(torch.ones(4, dtype=torch.float64), torch.full((4,), 1.1, dtype=torch.float64)), 20.0, rtol=1e-9, name="SQNR with 10% error everywhere")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(24)
x = torch.randn(17, 9, generator=g, dtype=torch.float64)
xh = x + 0.03 * torch.randn(17, 9, generator=g, dtype=torch.float64) * x.abs()
check_number(sqnr_db(x, xh), ref.sqnr_db(x, xh), rtol=1e-9, name="sqnr_db on random data")
### END HIDDEN TESTS

# %% markdown
# Per-tensor against per-channel on the weights of a small Llama, and on activations with **outliers**
# (LLM activations have a few channels 10–100× larger than the rest). With one scale per tensor, an outlier
# channel sets the scale for everyone; per-channel scaling isolates it.

# %%
def _fp8_study():
    model = random_llama(1, hidden_size=96)
    w = model.model.layers[0].mlp.down_proj.weight.detach().double()
    w[:, 3] *= 40  # a column of outliers, as activation-aware studies report
    acts = torch.randn(64, 96, dtype=torch.float64)
    acts[:, [5, 17]] *= 60  # two outlier features in every token
    for name, x in (("weights, down_proj", w), ("activations with outliers", acts),
                    ("activations, transposed (per-feature)", acts.T)):
        for pc in (False, True):
            xh = fp8_qdq(x, pc)
            print(f"{name:40s} per_channel={pc!s:5s} MSE {float(((x - xh) ** 2).mean()):.3e}  "
                  f"SQNR {sqnr_db(x, xh):6.2f} dB")


try:
    _fp8_study()
except NotImplementedError:
    print("finish Exercise 2 first")

# %% markdown
# ### Weights only, or weights and activations (W8A8)? (not graded)
# **Weight-only** quantisation stores the weights in FP8 (or 4 bits) and dequantises them on the fly before a
# BF16 matmul: it saves memory and the bandwidth that batch-1 decoding is limited by, but the tensor cores still
# compute in BF16. To run the product itself on FP8 tensor cores (`torch._scaled_mm`, Section 6) the
# **activations** must be FP8 too: **W8A8**. Activations are only known at run time, so their scales are either
# **static** (one per tensor, calibrated offline on sample data) or **dynamic**: computed from each new input,
# typically one per **token** (a row of `[tokens, features]`), which your `fp8_qdq(x, per_channel=True)` already
# does. Below: a layer's output error for weight-only FP8 and for W8A8 with static or dynamic activation scales,
# when every eighth token is 1000× louder than the rest (LLMs have such "massive activations" on a few tokens),
# with INT8 (integers −127…127, scale amax/127) next to FP8 for contrast. The SQNR is given over all tokens and
# over the quiet ones alone, since the loud tokens dominate the total.

# %%
def _int8_qdq(x, per_token=False):
    amax = x.abs().amax(-1, keepdim=True) if per_token else x.abs().max()
    s = torch.where(amax > 0, amax / 127, 1.0)
    return torch.round(x / s).clamp(-127, 127) * s


def _w8a8_demo():
    w = random_llama(1, hidden_size=96).model.layers[0].mlp.up_proj.weight.detach().double()  # [out, in]
    x = torch.randn(64, w.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[::8] *= 1000  # loud tokens
    quiet = torch.arange(64) % 8 != 0
    y = x @ w.T
    wq = fp8_qdq(w, True)
    for name, xq in (("weight-only FP8 (W8A16)", x),
                     ("W8A8 FP8, static per-tensor scale", fp8_qdq(x)),
                     ("W8A8 FP8, dynamic per-token scales", fp8_qdq(x, True)),
                     ("W8A8 INT8, static per-tensor scale", _int8_qdq(x)),
                     ("W8A8 INT8, dynamic per-token scales", _int8_qdq(x, True))):
        yq = xq @ wq.T
        print(f"{name:38s} output SQNR {sqnr_db(y, yq):6.2f} dB, quiet tokens only "
              f"{sqnr_db(y[quiet], yq[quiet]):6.2f} dB")


try:
    _w8a8_demo()
except NotImplementedError:
    print("finish Exercise 2 first")

# %% markdown
# In FP8 a shared scale only shifts exponents: a quiet token 1000× below the amax still has E4M3's 3 mantissa
# bits (it stays above 2⁻⁶, the smallest normal), so per-tensor and per-token scales give about the same error. In
# INT8 the step is the same for every value, amax/127, and a quiet token smaller than half a step becomes zero:
# per-token scales are what make INT8 activations usable. FP8's limit is its range: a token more than about
# 2¹⁵ below the amax falls into subnormals, and outlier **features**, which sit in every token, cost every token
# precision. Methods such as SmoothQuant (Xiao et al., 2023) divide those features by a per-feature factor and
# multiply it into the weights, which tolerate it better. With 4-bit activations
# (W4A4, NVFP4 on Blackwell) the 16-value blocks play the same role.

# %% markdown
# ## 3. NVFP4, MXFP4 and INT4
#
# Four bits give only E2M1's 15 distinct values, so the scales do the work. **NVFP4** (Blackwell) uses two levels:
#
# - an FP32 **tensor scale** $s_g = \mathrm{amax}(W) / (448 \cdot 6)$, stored once;
# - an E4M3 **block scale** per 16 consecutive values of a row, $s_b = \mathrm{E4M3}\big((\mathrm{amax}_b/6)/s_g\big)$;
# - values $q = \mathrm{E2M1}\big(x / (s_b s_g)\big)$, and $\hat x = q \cdot s_b \cdot s_g$.
#
# The tensor scale is what lets a block scale use E4M3's range: without it, a block of weights of size 0.01
# would need a block scale of about 0.01/6 ≈ 0.0017 — below E4M3's smallest normal (2⁻⁶ ≈ 0.0156) and even below
# its smallest subnormal (2⁻⁹ ≈ 0.00195), so it rounds to 2⁻⁹ (with one significant bit left). Worse, any block
# with $\mathrm{amax}_b < 6 \cdot 2^{-10}$ (≈ 0.0059) gets a block scale that rounds to **zero**: the whole block
# flushes to zero. Dividing by the tensor scale first moves the largest block scale to 448 and the others
# near it. Storage: 4 bits per value + 8 bits per 16 values = **4.5 bits**. **MXFP4** (OCP Microscaling) uses
# blocks of 32 and an E8M0 scale — a pure power of two, $2^{\lfloor \log_2 \mathrm{amax} \rfloor - 2}$ in the OCP
# spec (rounding the exponent **down**, so values up to just under 8 map above 6 and saturate); Model Optimizer
# rounds **up** instead, $2^{\lceil \log_2(\mathrm{amax}/6) \rceil}$, which never saturates. **INT4** (GPTQ/AWQ
# style) stores integers −8…7 with an FP16 scale $\mathrm{amax}/7$ per group of 128.
#
# Blocks run along the **last** dimension and never cross from one row into the next: a row whose length is not
# a multiple of 16 ends with a short block, padded with zeros.
#
# ### Exercise 3 (5 points)
# Write `nvfp4_quantize(w)` for a 2-D tensor, returning `(packed, s_block, s_global)`: `packed` the uint8 codes
# `[rows, ceil(cols/16)*8]` (padding included, packed with your `pack_fp4`), `s_block` the E4M3 block scales as
# float64 `[rows, ceil(cols/16)]`, `s_global` a Python float (round it to FP32: `float(torch.tensor(v,
# dtype=torch.float32))`; use 1.0 if the tensor is all zeros; small weights must not flush to zero); and
# `nvfp4_dequantize(packed, s_block, s_global,
# cols)` returning float64 `[rows, cols]`. A block whose scale is 0 decodes to zeros.
# Then `mxfp4_qdq(w)`: MXFP4 quantise-dequantise with the **OCP rule** (blocks of 32 per row, E8M0 scale
# $2^{\lfloor \log_2 \mathrm{amax}_b \rfloor - 2}$, E2M1 values saturating at 6; an all-zero block stays zero).

# %% solution id=nvfp4
def nvfp4_quantize(w, block=16):
    """NVFP4: (packed uint8 codes, E4M3 block scales, FP32 tensor scale)."""
    ### BEGIN SOLUTION
    rows, cols = w.shape
    nb = -(-cols // block)
    x = torch.zeros(rows, nb * block, dtype=torch.float64)
    x[:, :cols] = w.double()
    x = x.view(rows, nb, block)
    amax = x.abs().max().item()
    s_global = float(torch.tensor(amax / (448 * 6) if amax > 0 else 1.0, dtype=torch.float32))
    s_block = round_to_format(x.abs().amax(-1) / 6 / s_global, "e4m3")
    scale = (s_block * s_global)[..., None]
    codes = e2m1_encode(torch.where(scale > 0, x / scale.clamp(min=1e-300), 0.0))
    return pack_fp4(codes.reshape(rows, -1)), s_block, s_global
    ### END SOLUTION


def nvfp4_dequantize(packed, s_block, s_global, cols, block=16):
    """float64 [rows, cols] from nvfp4_quantize's output."""
    ### BEGIN SOLUTION
    rows = packed.shape[0]
    vals = e2m1_decode(unpack_fp4(packed)).view(rows, -1, block) * (s_block * s_global)[..., None]
    return vals.reshape(rows, -1)[:, :cols]
    ### END SOLUTION


def mxfp4_qdq(w, block=32):
    """MXFP4 (OCP rule) quantise-dequantise, float64."""
    ### BEGIN SOLUTION
    rows, cols = w.shape
    nb = -(-cols // block)
    x = torch.zeros(rows, nb * block, dtype=torch.float64)
    x[:, :cols] = w.double()
    x = x.view(rows, nb, block)
    amax = x.abs().amax(-1, keepdim=True)
    scale = torch.exp2(torch.floor(torch.log2(torch.where(amax > 0, amax, 1.0))) - 2)
    return (round_to_format(x / scale, "e2m1") * scale).reshape(rows, -1)[:, :cols]
    ### END SOLUTION

# %% tests id=test_nvfp4 points=3
w = torch.randn(4, 40, generator=torch.Generator().manual_seed(1)) * 0.02
packed, s_block, s_global = nvfp4_quantize(w)
check_property(tuple(packed.shape) == (4, 24) and packed.dtype == torch.uint8,
               f"packed should be uint8 of shape (4, 24) for a (4, 40) input, got {packed.dtype} {tuple(packed.shape)}")
check_property(tuple(s_block.shape) == (4, 3), f"s_block should have shape (4, 3), got {tuple(s_block.shape)}")
wh = nvfp4_dequantize(packed, s_block, s_global, 40)
check_property(wh.shape == w.shape, f"nvfp4_dequantize returned shape {tuple(wh.shape)}")
check_property(sqnr_db(w, wh) > 15, f"NVFP4 of Gaussian weights should reach > 15 dB SQNR, got {sqnr_db(w, wh):.1f}")
small = w * 1e-3  # weights of size 2e-5: NVFP4 must keep them (a block scale alone would flush them to zero)
small_h = nvfp4_dequantize(*nvfp4_quantize(small), 40)
check_property(sqnr_db(small, small_h) > 15,
               f"NVFP4 of small weights (std 2e-5) should reach > 15 dB SQNR too, got {sqnr_db(small, small_h):.1f}")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(25)
for shape, s in (((9, 40), 0.02), ((3, 16), 1.0), ((6, 77), 2e-4), ((5, 33), 5e3), ((1, 5), 0.7)):
    w = torch.randn(*shape, generator=g, dtype=torch.float64) * s
    w[0] *= 30  # rows of different loudness: each block needs its own amax
    w[-1, -1] = 0.0
    p, sb, sg = nvfp4_quantize(w)
    rp, rsb, rsg = ref.nvfp4_quantize(w)
    check_close(float(sg), rsg, rtol=1e-6, name=f"s_global for shape {shape}, scale {s}")
    check_close(sb * sg, rsb * rsg, rtol=1e-6, name=f"effective block scales s_block*s_global, shape {shape}")
    check_close(p.long(), rp.long(), rtol=0, name=f"packed codes, shape {shape}")
    check_close(nvfp4_dequantize(p, sb, sg, shape[1]), ref.nvfp4_qdq(w), rtol=1e-9, atol=0,
                name=f"dequantised NVFP4, shape {shape}, scale {s}")
z = torch.zeros(2, 20, dtype=torch.float64)
z[1, :4] = torch.tensor([1.0, -2.0, 3.0, 0.5])
check_close(nvfp4_dequantize(*nvfp4_quantize(z), 20), ref.nvfp4_qdq(z), rtol=1e-9,
            name="NVFP4 of a tensor with all-zero blocks")
### END HIDDEN TESTS

# %% tests id=test_mxfp4 points=2
w = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
wh = mxfp4_qdq(w)
check_property(wh.shape == w.shape, f"mxfp4_qdq changed the shape to {tuple(wh.shape)}")
check_close(mxfp4_qdq(torch.tensor([[7.0, 1.0, 0.0]])), torch.tensor([[6.0, 1.0, 0.0]]),
            name="MXFP4 of [7, 1, 0] (scale 2^(2-2) = 1: 7 saturates to 6)")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(26)
for shape, s in (((7, 70), 0.05), ((4, 32), 3.0), ((2, 9), 1e-3), ((5, 100), 200.0)):
    w = torch.randn(*shape, generator=g, dtype=torch.float64) * s
    w[1] *= 40
    check_close(mxfp4_qdq(w), ref.mxfp4_qdq(w, rule="ocp"), rtol=1e-12, atol=0,
                name=f"mxfp4_qdq(x{shape}) with the OCP rule")
### END HIDDEN TESTS

# %% markdown
# Error against bits per element, on the same weights (64 rows × 1000 columns: 1000 is not a multiple of 16, 32
# or 128, so every row ends in a short block). The bits include the scales, computed with week 00's planner.

# %%
import matplotlib.pyplot as plt


def int4_qdq(w, group=128):
    """Symmetric INT4 with one scale amax/7 per group of each row (integers -8..7)."""
    rows, cols = w.shape
    x = F.pad(w.double(), (0, -cols % group)).view(rows, -1, group)
    s = x.abs().amax(-1, keepdim=True) / 7
    s = torch.where(s > 0, s, 1.0)
    return (torch.clamp(torch.round(x / s), -8, 7) * s).view(rows, -1)[:, :cols]


def mxfp4_ceil_qdq(w, block=32):
    """MXFP4 with Model Optimizer's rule: scale 2^ceil(log2(amax/6)), never saturates."""
    rows, cols = w.shape
    x = F.pad(w.double(), (0, -cols % block)).view(rows, -1, block)
    amax = x.abs().amax(-1, keepdim=True)
    s = torch.exp2(torch.ceil(torch.log2(torch.where(amax > 0, amax, 6.0) / 6)))
    return (round_to_format(x / s, "e2m1") * s).view(rows, -1)[:, :cols]


torch.manual_seed(0)
W = torch.randn(64, 1000, dtype=torch.float64) * 0.02
W[:, ::97] *= 8  # some larger weights, as in trained LMs
rows = []
try:
    rows.append(("FP8 E4M3 per tensor", capacity.bits_per_param("fp8"), fp8_qdq(W)))
    rows.append(("FP8 E4M3 per channel", 8 + 32 / 1000, fp8_qdq(W, True)))
    rows.append(("NVFP4 (16, E4M3)", capacity.bits_per_param("nvfp4"), nvfp4_dequantize(*nvfp4_quantize(W), 1000)))
    rows.append(("MXFP4 OCP (32, E8M0)", capacity.bits_per_param("mxfp4"), mxfp4_qdq(W)))
    rows.append(("MXFP4 ceil rule", capacity.bits_per_param("mxfp4"), mxfp4_ceil_qdq(W)))
    for gsz in (32, 64, 128):
        rows.append((f"INT4 group {gsz}", capacity.bits_per_param("int4", gsz), int4_qdq(W, gsz)))
    rows.append(("FP4 E2M1 per tensor (no blocks)", 4.0, round_to_format(W / (W.abs().max() / 6), "e2m1")
                 * (W.abs().max() / 6)))
except NotImplementedError:
    print("finish Exercises 2 and 3 first")
for name, bits, wh in rows:
    print(f"{name:34s} {bits:6.3f} bits  SQNR {sqnr_db(W, wh):6.2f} dB")
if rows:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, bits, wh in rows:
        ax.scatter(bits, sqnr_db(W, wh))
        ax.annotate(name, (bits, sqnr_db(W, wh)), fontsize=7)
    ax.set_xlabel("bits per element (scales included)")
    ax.set_ylabel("SQNR (dB), higher is better")
    ax.set_title("Quantisation error vs storage (measured, 64×1000 weights)")
    plt.show()

# %% markdown
# ## 4. A small LM, fake-quantised
#
# **Fake quantisation** replaces each weight by its quantise-dequantise image and runs the model in high
# precision: the numbers are those a real low-precision kernel would see, without needing one. Embeddings and
# the output head are usually kept in higher precision; here you quantise every `nn.Linear` inside the decoder
# layers (`model.model.layers`) and leave `lm_head` alone.
#
# ### Exercise 4 (2 points)
# Write `fake_quantize_linears(model, qdq)`: replace in place the weight of every `nn.Linear` whose module name
# contains `layers.` by `qdq(weight)` (cast back to the weight's dtype), and return the list of the names you
# changed; and `perplexity(model, ids)`: $\exp$ of the mean next-token cross-entropy of `ids` `[batch, seq]`
# (predict token $t+1$ from the logits at $t$).

# %% solution id=fakequant
def fake_quantize_linears(model, qdq):
    """Quantise-dequantise every Linear weight inside the decoder layers, in place; return their names."""
    ### BEGIN SOLUTION
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "layers." in name:
            with torch.no_grad():
                module.weight.copy_(qdq(module.weight.detach()).to(module.weight.dtype))
            names.append(name)
    return names
    ### END SOLUTION


def perplexity(model, ids):
    """exp(mean next-token cross-entropy)."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    nll = -logp.gather(-1, ids[:, 1:, None]).mean()
    return math.exp(nll.item())
    ### END SOLUTION

# %% tests id=test_fake_quant points=1
m = random_llama(3)
names = fake_quantize_linears(m, lambda t: t * 0)
check_property(len(names) == 14, f"a 2-layer Llama has 14 Linear layers in its decoder, you changed {len(names)}")
check_property(float(m.model.layers[1].mlp.up_proj.weight.detach().abs().sum()) == 0, "the weights were not replaced in place")
check_property(float(m.lm_head.weight.detach().abs().sum()) > 0, "lm_head (tied to the embeddings) must stay unquantised")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref


def coarse(t):  # a stand-in quantiser defined here: the sandbox lets no student code call the reference's
    return torch.round(t * 64) / 64


m1, m2 = random_llama(4, num_hidden_layers=3), random_llama(4, num_hidden_layers=3)
n1 = fake_quantize_linears(m1, coarse)
n2 = ref.fake_quantize_linears(m2, coarse)
check_property(sorted(n1) == sorted(n2), "the set of quantised layers differs from the expected decoder Linears")
s1, s2 = m1.state_dict(), m2.state_dict()
for k in s2:
    check_close(s1[k], s2[k], rtol=0, atol=0, name=f"parameter {k} after fake quantisation")
### END HIDDEN TESTS

# %% tests id=test_perplexity points=1
m = random_llama(5)
ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(5))
ppl = perplexity(m, ids)
check_property(100 < ppl < 600, f"a random model over 256 tokens should have perplexity near 256, got {ppl:.4g}")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

m = random_llama(6, num_hidden_layers=1)
for shape in ((1, 9), (3, 31)):
    ids = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(shape[1]))
    check_number(perplexity(m, ids), ref.perplexity(m, ids), rtol=1e-5, name=f"perplexity on ids of shape {shape}")
### END HIDDEN TESTS

# %% markdown
# ### Study: perplexity per format, and the sensitive layers (not graded)
# A perplexity measurement means something only on text the model predicts well: on text it has never learned,
# rounding the weights is as likely to help as to hurt (a model at perplexity ~1000 is guessing). The course's
# tiny LM (`sparkcourse.models`, 365k parameters) was trained on a synthetic chat corpus of five tasks (2-digit
# addition, reversing and uppercasing words, facts about number formats and the Spark, with the **loss on the
# answer only**). So the study measures it the same way: held-out questions of those five tasks
# (`sparkcourse/data/instruct/test.jsonl`, operands and words the training never saw), in the chat template,
# perplexity over the **answer tokens**. Its FP32 floor is near 1.25, not 1: the model was trained with label
# smoothing 0.2, which caps its confidence. The study is skipped while grading.

# %%
import copy
import json

from sparkcourse import models

PRETRAINING_TASKS = {"add", "reverse", "upper", "fact", "fact_json"}


def answer_batch(tok):
    """(ids, labels) of the held-out rows of the LM's own tasks: prompt in the chat template, labels on the answer."""
    path = models.TINY_LM_PATH.parent / "instruct" / "test.jsonl"
    ids, labels = [], []
    for r in map(json.loads, path.read_text().splitlines()):
        if r["task"] in PRETRAINING_TASKS:
            p = tok(models.chat_prompt(tok, r["prompt"]), add_special_tokens=False).input_ids
            a = tok(r["response"] + "<|end|>", add_special_tokens=False).input_ids
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
    n = max(map(len, ids))
    pad = [tok.pad_token_id]
    return (torch.tensor([x + pad * (n - len(x)) for x in ids]),
            torch.tensor([y + [-100] * (n - len(y)) for y in labels]))


@torch.no_grad()
def answer_perplexity(model, ids, labels):
    """exp(mean cross-entropy over the answer tokens), padding masked out."""
    out = model(input_ids=ids)  # padding is on the right: causal attention never lets it reach a label
    logp = torch.log_softmax(out.logits[:, :-1].double(), -1)
    lab = labels[:, 1:]
    keep = lab != -100
    nll = -(logp.gather(-1, lab.clamp(min=0)[..., None])[..., 0] * keep).sum() / keep.sum()
    return math.exp(nll.item())


if not sc.grading():
    try:
        base, tok = models.load_tiny_lm()
        ids, labels = answer_batch(tok)
        print(f"the course's tiny LM on {len(ids)} held-out questions of its own tasks, "
              f"{int((labels != -100).sum())} answer tokens")
        formats = {"FP8 per tensor": fp8_qdq, "FP8 per channel": lambda t: fp8_qdq(t, True),
                   "NVFP4": lambda t: nvfp4_dequantize(*nvfp4_quantize(t), t.shape[1]), "MXFP4 (OCP)": mxfp4_qdq,
                   "INT4 g128": int4_qdq, "FP4 per tensor": lambda t: round_to_format(
                       t.double() / (t.abs().max() / 6), "e2m1") * (t.abs().max() / 6)}
        ppl_base = answer_perplexity(base, ids, labels)
        print(f"{'FP32 baseline':24s} perplexity {ppl_base:8.4f}")
        results = {}
        for name, fn in formats.items():
            m = copy.deepcopy(base)
            fake_quantize_linears(m, fn)
            results[name] = answer_perplexity(m, ids, labels)
            print(f"{name:24s} perplexity {results[name]:8.4f}  ({results[name] / ppl_base - 1:+.2%})")
        # sensitivity: quantise one Linear at a time to NVFP4
        sens = {}
        for name, mod in base.named_modules():
            if isinstance(mod, torch.nn.Linear) and "layers." in name:
                m = copy.deepcopy(base)
                target = m.get_submodule(name)
                with torch.no_grad():
                    target.weight.copy_(formats["NVFP4"](target.weight.detach()).float())
                sens[name] = answer_perplexity(m, ids, labels) / ppl_base - 1
        for name, d in sorted(sens.items(), key=lambda kv: -kv[1])[:5]:
            print(f"most sensitive: {name:32s} NVFP4 alone {d:+.3%}")
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(len(sens)), [100 * v for v in sens.values()])
        ax.set_xticks(range(len(sens)), [n.replace("model.layers.", "L") for n in sens], rotation=70, fontsize=7)
        ax.set_ylabel("perplexity change (%)")
        ax.set_title("NVFP4 one layer at a time (measured)")
        plt.show()
    except NotImplementedError:
        print("finish Exercises 2-4 first")

# %% markdown
# **Reading the numbers** (the course's reference solutions gave, on a shared 2-vCPU AMD EPYC, 2026-11-29: FP32
# 1.2533; FP8 per tensor +0.14%, FP8 per channel +0.01%, NVFP4 +0.82%, INT4 g128 +2.4%, MXFP4 +2.8%, FP4 per
# tensor +3.5% — your run should match to the digits shown if your solutions are right). The order is the one the
# SQNR table above predicts: FP8 is nearly free, NVFP4's fine E4M3 block scales beat MXFP4's power-of-two scales
# and INT4's coarser groups, and a single FP4 scale per tensor is worst.
#
# **Checking the claim "3.5× memory reduction vs FP16 with 0.1% accuracy loss".** Memory: NVFP4 stores
# 4.5 bits per weight, so the reduction from 16 bits is $16/4.5$ (computed below) — the claim's 3.5× is right
# if it rounds down, and it is *not* 4×: the block scales cost an eighth of the 4-bit payload. Accuracy: the
# published figure is NVIDIA's — for **DeepSeek-R1-0528** quantised to NVFP4 with post-training calibration, the
# accuracy on its benchmarks changed by about 1% or less against FP8 (NVIDIA, *Introducing NVFP4 for Efficient
# and Accurate Low-Precision Inference*, technical blog, 2025). That is a benchmark accuracy of a 671B-parameter
# model, not a perplexity, measured against FP8 rather than FP16, and with recipes that keep some layers in
# higher precision. On our 365k-parameter model, whose 80-wide rows hold only five 16-value blocks each and have
# no redundancy to spare, NVFP4 costs +0.8% perplexity when every decoder Linear is quantised. "0.1%" is a claim
# to test on your model and task, not a property of the format.

# %%
print(f"FP16 -> NVFP4 memory reduction: {16 / capacity.bits_per_param('nvfp4'):.3f}x "
      f"(FP16 -> FP8: {16 / capacity.bits_per_param('fp8'):.1f}x, FP16 -> MXFP4: "
      f"{16 / capacity.bits_per_param('mxfp4'):.3f}x)")

# %% markdown
# ## 5. The KV cache in FP8
#
# Week 00 showed the KV cache competing with the weights for 128 GB. Storing K and V in FP8 halves it. Only K
# and V are cached; the query of the current token stays in high precision.
#
# ### Exercise 5 (2 points)
# Write `fp8_kv_attention(q, k, v)`: causal scaled-dot-product attention (`[batch, heads, seq, dim]`, float64)
# where K and V are each stored in E4M3 with **their own** per-tensor amax scale (use your `fp8_qdq`).

# %% solution id=kv
def fp8_kv_attention(q, k, v):
    """Causal attention with K and V quantised to FP8 E4M3 (one scale each)."""
    ### BEGIN SOLUTION
    q, kq, vq = q.double(), fp8_qdq(k), fp8_qdq(v)
    L = q.shape[-2]
    scores = q @ kq.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.ones(L, kq.shape[-2], dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ vq
    ### END SOLUTION

# %% tests id=test_kv points=2
g = torch.Generator().manual_seed(7)
q, k, v = (torch.randn(1, 2, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
out = fp8_kv_attention(q, k, v)
exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
check_property(out.shape == exact.shape, f"output shape {tuple(out.shape)}, expected {tuple(exact.shape)}")
check_property(0 < float((out - exact).abs().max()) < 0.1, "the FP8 cache should change the output a little")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w02_quantization as ref

g = torch.Generator().manual_seed(27)
for b, h, L, d in ((2, 3, 11, 16), (1, 1, 5, 7)):
    q = torch.randn(b, h, L, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, L, d, generator=g, dtype=torch.float64) * 2
    v = torch.randn(b, h, L, d, generator=g, dtype=torch.float64) * 0.1
    check_close(fp8_kv_attention(q, k, v), ref.fp8_kv_attention(q, k, v), rtol=1e-9, atol=1e-12,
                name=f"fp8_kv_attention for shape {(b, h, L, d)}")
### END HIDDEN TESTS

# %% markdown
# The error in attention outputs of the tiny Llama's real activations, and what FP8 buys at Llama-3-70B scale
# on a Spark, with week 00's planner (`capacity.max_context`; NVFP4 weights). Llama-3-70B was trained for 8,192
# tokens, so the memory a smaller cache frees buys **more sequences** (batch), not a longer context (and before
# that, the reserve for the OS, CUDA and activations of week 00 comes off the top):

# %%
try:
    m = random_llama(8)
    torch.manual_seed(8)
    ids = torch.randint(0, 256, (1, 64))
    with torch.no_grad():
        hs = m.model.embed_tokens(ids)
        attn = m.model.layers[0].self_attn
        q = attn.q_proj(hs).view(1, 64, 4, 12).transpose(1, 2).double()
        k = attn.k_proj(hs).view(1, 64, 2, 12).transpose(1, 2).repeat_interleave(2, 1).double()
        v = attn.v_proj(hs).view(1, 64, 2, 12).transpose(1, 2).repeat_interleave(2, 1).double()
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    print(f"attention output SQNR with an FP8 KV cache: {sqnr_db(exact, fp8_kv_attention(q, k, v)):.1f} dB")
except NotImplementedError:
    print("finish Exercise 5 first")
cfg70 = capacity.CONFIGS["meta-llama/Meta-Llama-3-70B"]
for label, b in (("FP16", 2.0), ("FP8", 1.0)):
    mem = capacity.max_context(capacity.SPARK_MEMORY_BYTES, cfg70, "nvfp4", b)
    batch = mem // cfg70["max_position_embeddings"]
    print(f"KV {label}: {capacity.kv_bytes_per_token(cfg70, b) / 1e6:.3f} MB/token; with NVFP4 weights 128 GB holds "
          f"{mem:,} tokens of cache: {batch} sequences at the model's trained {cfg70['max_position_embeddings']:,}")

# %% markdown
# ## 6. Where FP8 and NVFP4 run for real
#
# **FP8 matmul.** `torch._scaled_mm(a_fp8, b_fp8, scale_a, scale_b, out_dtype=torch.bfloat16)` runs FP8 tensor
# cores on Ada, Hopper and Blackwell (compute capability ≥ 8.9): `a` row-major, `b` column-major, the scales
# FP32 tensors — one per tensor (portable), or row-wise (`[M, 1]` and `[1, N]`) where the build supports it.
# `sparkcourse.gpu.scaled_mm_fp8` wraps it for `nn.Linear`-shaped weights (the same call `sparkcourse doctor`
# makes). `benchmarks/fp8_matmul.py` in the course repository times it against a BF16 `torch.matmul` with CUDA
# events. Measured on an **H200** (compute capability 9.0, torch 2.11 + CUDA 13.0, 2026-11-29;
# `benchmarks/fp8_matmul_h200.md`), **not on a Spark**: FP8 over BF16 1.69× at 8192³ (1295 vs 765 TFLOP/s),
# 1.61× at 4096³, 1.15× at 2048³, and only 1.09× for a decode-like 16 × 4096 × 14336 product, which is limited
# by reading the weights, not by the tensor cores; relative error on Gaussian inputs 3.75e-2 for FP8 against
# 2.9e-3 for BF16. Run it on your Spark —
#
# ```bash
# python benchmarks/fp8_matmul.py --out benchmarks/fp8_matmul_spark.md
# ```
#
# **NVFP4 matmul.** On Blackwell (compute capability 10.x and 12.x; the Spark's GB10 is 12.1) the same
# `torch._scaled_mm` takes `torch.float4_e2m1fn_x2` operands — two E2M1 values per byte, element 2i in the low
# nibble, exactly your `pack_fp4` layout — with E4M3 block scales for every 16 values along K, rearranged into
# cuBLAS's tiled layout (`sparkcourse.gpu.blocked_scales`); the FP32 tensor scales multiply the result.
# `sparkcourse.gpu.scaled_mm_nvfp4` does this with what your `nvfp4_quantize` returns. Hopper has no FP4
# tensor cores.
#
# The next cell runs both on **your own quantised tensors** where the GPU can: a `[2048, 4096]` activation
# times a `[4096, 4096]` weight, each product compared with the same quantised values dequantised and
# multiplied in BF16 (the two should agree to BF16 rounding: the tensor cores compute exactly what your
# quantiser produced) and with the unquantised FP32 product (the quantisation error), timed with CUDA events.

# %%
from sparkcourse import gpu


def fp8_quantize(x):
    """(E4M3 tensor, FP32 scale amax/448) of x, rounded by your round_to_format (per tensor)."""
    amax = float(x.abs().max())
    scale = float(torch.tensor(amax / 448 if amax > 0 else 1.0, dtype=torch.float32))
    return round_to_format(x.double() / scale, "e4m3").to(torch.float8_e4m3fn), scale  # exact: already E4M3


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def hardware_matmuls(M=2048, K=4096, N=4096, device="cuda"):
    """FP8 and NVFP4 products of your quantised tensors on the tensor cores, or why each was not run."""
    cc = torch.cuda.get_device_capability() if device == "cuda" else None
    where = f"sm_{cc[0]}{cc[1]}" if cc else device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=g)
    x[:, ::97] *= 8  # some outlier features
    w = torch.randn(N, K, generator=g) * 0.02
    xd, wd = x.to(device), w.to(device)
    exact = xd @ wd.T
    xb, wb = xd.bfloat16(), wd.bfloat16()
    t_bf16 = gpu.time_cuda(lambda: xb @ wb.T, warmup=25, repeats=50)
    flop = 2 * M * K * N
    print(f"{where}: {M}x{K}x{N}, BF16 matmul {flop / t_bf16 / 1e12:7.1f} TFLOP/s")
    if device != "cuda" or gpu.fp8_supported(cc):
        xq, sx = fp8_quantize(x)
        wq, sw = fp8_quantize(w)
        xq, wq = xq.to(device), wq.to(device)
        # the scales go to the GPU once: a Python float or CPU tensor would be copied (and synchronised) per call
        sx, sw = (torch.as_tensor(s, dtype=torch.float32, device=device) for s in (sx, sw))
        got = gpu.scaled_mm_fp8(xq, wq, sx, sw)
        deq = (xq.bfloat16() * sx) @ (wq.bfloat16() * sw).T
        t = gpu.time_cuda(lambda: gpu.scaled_mm_fp8(xq, wq, sx, sw), warmup=25, repeats=50)
        print(f"FP8 E4M3 _scaled_mm    {flop / t / 1e12:7.1f} TFLOP/s ({t_bf16 / t:.2f}x BF16); rel. error vs "
              f"dequantised BF16 {_rel(got, deq):.1e}, vs FP32 unquantised {_rel(got, exact):.1e}")
    else:
        print(f"FP8 path not run: {where} has no FP8 tensor cores (they need compute capability 8.9+)")
    if device == "cuda" and gpu.fp4_supported(cc):
        px, bx, gx = nvfp4_quantize(x)
        pw, bw, gw = nvfp4_quantize(w)
        px, pw, bx, bw = px.to(device), pw.to(device), bx.to(device), bw.to(device)
        gxf, gwf = float(gx), float(gw)  # once, not a device-to-host copy in every timed call
        try:
            got = gpu.scaled_mm_nvfp4(px, bx, gxf, pw, bw, gwf)
        except Exception as exc:  # a torch/cuBLAS build without NVFP4 for this GPU: say so, do not crash
            print(f"NVFP4 path failed on {where}: {str(exc).splitlines()[0][:160]}")
            return
        dx = nvfp4_dequantize(px.cpu(), bx.cpu(), gx, K).to(device).bfloat16()
        dw = nvfp4_dequantize(pw.cpu(), bw.cpu(), gw, K).to(device).bfloat16()
        t = gpu.time_cuda(lambda: gpu.scaled_mm_nvfp4(px, bx, gxf, pw, bw, gwf), warmup=25, repeats=50)
        print(f"NVFP4 _scaled_mm       {flop / t / 1e12:7.1f} TFLOP/s ({t_bf16 / t:.2f}x BF16); rel. error vs "
              f"dequantised BF16 {_rel(got, dx @ dw.T):.1e}, vs FP32 unquantised {_rel(got, exact):.1e}")
    elif device == "cuda":
        print(f"NVFP4 path not run: {where} has no FP4 tensor cores (Blackwell, compute capability 10.x/12.x, has "
              "them; Hopper sm_90 does not)")


if profile.is_spark and torch.cuda.is_available():
    try:
        hardware_matmuls()
    except NotImplementedError:
        print("finish Exercises 1 and 3 first")
elif profile.is_spark:
    print("spark profile without a CUDA GPU: FP8 and NVFP4 paths not run (they need NVIDIA tensor cores)")
else:
    print("tiny profile: FP8 and NVFP4 tensor-core paths not run (no GPU while grading); "
          "the benchmark figures above are from an H200")

# %% markdown
# **NVFP4 in production.** The route NVIDIA documents: quantise with TensorRT Model Optimizer, then serve with
# TensorRT-LLM (or vLLM/SGLang, which load the exported checkpoint). On a Spark (in NVIDIA's TensorRT-LLM
# container; the model id is an example):
#
# ```python
# import modelopt.torch.quantization as mtq
# from modelopt.torch.export import export_hf_checkpoint
# model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B-Instruct", dtype=torch.bfloat16).cuda()
# def calibrate(m):                         # a few hundred samples of your own data
#     for batch in calib_loader: m(batch.cuda())
# model = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, forward_loop=calibrate)
# export_hf_checkpoint(model, export_dir="llama3.1-8b-nvfp4")
# ```
# ```bash
# trtllm-serve llama3.1-8b-nvfp4 --backend pytorch      # or: trtllm-bench / vllm serve llama3.1-8b-nvfp4
# ```

# %% markdown
# ## Wrap-up
# - E4M3 reaches ±448 with 3 mantissa bits, E5M2 ±57344 with 2; E2M1 has only 0, 0.5, 1, 1.5, 2, 3, 4, 6.
#   Round to nearest **even** and **saturate**.
# - NVFP4 = E2M1 + an E4M3 scale per 16 values + an FP32 tensor scale: **4.5 bits**, 16/4.5 ≈ **3.56×** smaller
#   than FP16; MXFP4 = E2M1 + a power-of-two scale per 32 values: 4.25 bits, coarser scales.
# - Per-channel scales protect against outlier channels; block scales (NVFP4, MXFP4, INT4 groups) go further.
# - An FP8 KV cache halves week 00's 0.33 MB/token for Llama-3-70B to 0.16 MB.
#
# **Read more:** Micikevicius et al., *FP8 Formats for Deep Learning* (2022) — E4M3/E5M2 definitions; OCP
# *Microscaling Formats (MX) Specification v1.0* (2023) — MXFP4, E8M0 and its scale rule; NVIDIA, *Introducing
# NVFP4 for Efficient and Accurate Low-Precision Inference* (technical blog, 2025); TensorRT Model Optimizer
# documentation (`mtq.NVFP4_DEFAULT_CFG`); PyTorch `torch.float8_e4m3fn`, `torch._scaled_mm`.
