# %% markdown
# # Week 06 — State space models: from the recurrence to Mamba, against attention's KV cache
#
# A transformer remembers its context by keeping it: every generated token appends its keys and values to a
# **KV cache** that grows linearly with the context. On a DGX Spark the cache competes with the weights for the
# same **128 GB** of unified memory. A **state space model** (SSM) remembers by *compressing*: it carries a
# fixed-size state from token to token, so its memory for inference does not grow with the context at all.
# Mamba made that compression **selective** (what enters and leaves the state depends on the input), which is
# what lets it compete with attention on language.
#
# **You will learn to**
# 1. discretise a continuous linear SSM with a zero-order hold (as S4D and Mamba do) and see that its recurrent
#    and convolutional views give the same output (the view S4 introduced);
# 2. write Mamba's selective scan and match transformers' `MambaMixer` to float64 precision;
# 3. compute the same recurrence with a parallel associative scan in O(log L) steps, and time both;
# 4. assemble a Mamba block that loads the weights of a transformers `MambaModel`;
# 5. train a tiny Mamba, the same Mamba made time-invariant, and a tiny Transformer on a task that needs
#    selection (a demo);
# 6. measure a constant recurrent state against a growing KV cache, and say what it means in 128 GB.
#
# **Time:** about 3½–4 hours (readers of an earlier version needed 1–2 hours more than the 2 it then stated);
# the training demo adds a few minutes of waiting on a CPU. **Points:** 18, all autograded (the demos are not
# graded).
#
# Why it matters on the Spark: week 00's planner says that Llama-3-70B keeps 0.33 MB of FP16 KV cache per token;
# section 6 computes what that costs at long context, next to the few megabytes of a Mamba model's state.

# %% setup id=setup
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers

import sparkcourse as sc
from sparkcourse import capacity
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
# transformers prints a one-time notice that the optional mamba_ssm / causal_conv1d kernels are absent and its
# PyTorch path is used (which is what we want here); keep it quiet.
transformers.logging.set_verbosity_error()
GB, MB = 1e9, 1e6
SPARK_BYTES = capacity.SPARK_MEMORY_BYTES
CONFIGS = capacity.CONFIGS
# The demos run on the GPU when there is one; spark sizes only where a GPU can run them.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FULL = profile.is_spark and DEVICE.type == "cuda"
if profile.is_spark and not FULL:
    print("spark profile without a CUDA GPU: the demos run at tiny size on the CPU and the GPU-only cells skip")


def ssm_recurrent(Abar, Bbar, C, u):
    """Given: the recurrent view x_t = Ā x_{t-1} + B̄ u_t, y_t = C·x_t over the last axis of u (x_{-1} = 0)."""
    x = torch.zeros(*u.shape[:-1], Abar.shape[0], dtype=Abar.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = x @ Abar.T + Bbar * u[..., t, None]
        ys.append(x @ C)
    return torch.stack(ys, -1)


def sequential_scan(a, b):
    """Given: x_t = a_t * x_{t-1} + b_t along the last axis (x_{-1} = 0), one Python step per position."""
    x = torch.zeros_like(b[..., 0])
    out = []
    for t in range(b.shape[-1]):
        x = a[..., t] * x + b[..., t]
        out.append(x)
    return torch.stack(out, -1)


def count_torch_ops(fn, *args):
    """How many torch operations (calls, tensor methods, indexing) `fn(*args)` performs."""
    from torch.overrides import TorchFunctionMode

    class Counter(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Counter.n += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn(*args)
    return Counter.n


def tiny_mamba(seed=0, **overrides):
    """A randomly initialised transformers MambaModel in float64 (no download) and its config dict."""
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(seed)
    cfg = dict(vocab_size=31, hidden_size=10, state_size=5, num_hidden_layers=2, expand=2, conv_kernel=3,
               time_step_rank=3) | overrides
    return MambaModel(MambaConfig(**cfg)).double().eval(), cfg


def cache_bytes(tensors):
    """Total bytes of a list of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


def timed(fn, *args, repeat=3, device=DEVICE, **kwargs):
    """(best seconds over `repeat` calls, last result): CUDA events on a GPU (synchronised), perf_counter on a CPU."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args, **kwargs)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            seconds = time.perf_counter() - t0
        best = min(best, seconds)
    return best, out


def unified_available_bytes():
    """MemAvailable of /proc/meminfo on a unified-memory machine (a DGX Spark), else None."""
    from sparkcourse import gpu

    return gpu.meminfo_bytes("MemAvailable") if gpu.detect().unified else None

# %% markdown
# ## 1. Continuous to discrete: recurrence and convolution
#
# A linear time-invariant SSM maps an input signal $u(t)$ to an output $y(t)$ through a hidden state $x(t)\in\mathbb{R}^n$:
# $$x'(t) = A\,x(t) + B\,u(t), \qquad y(t) = C\,x(t).$$
# Tokens arrive at discrete steps of size $\Delta$. If $u$ is held constant over each step (a **zero-order
# hold**), the exact solution over one step is
# $$x_t = \bar A\,x_{t-1} + \bar B\,u_t,\qquad \bar A = e^{\Delta A},\qquad \bar B = A^{-1}\,(e^{\Delta A} - I)\,B.$$
# This zero-order hold is the discretisation of **S4D** (Gu, Gupta, Goel & Ré 2022) and of **Mamba**. The original
# **S4** (Gu, Goel & Ré 2022) used the **bilinear** transform instead,
# $\bar A = (I - \tfrac{\Delta}{2}A)^{-1}(I + \tfrac{\Delta}{2}A)$, $\bar B = (I - \tfrac{\Delta}{2}A)^{-1}\Delta B$;
# both agree to first order in $\Delta$. Mamba keeps the exact $\bar A = e^{\Delta A}$ but simplifies $\bar B$ to
# the Euler term $\Delta B$, the first term of the series above.
#
# Unrolling the recurrence from $x_{-1}=0$ gives $y_t = \sum_{k=0}^{t} C\bar A^k\bar B\,u_{t-k}$: a **causal
# convolution** of $u$ with the kernel $K_k = C\bar A^k\bar B$. Training can use the convolution (parallel over
# the sequence); generation uses the recurrence (constant work and memory per token).
#
# ### Exercise 1 (4 points)
# - `discretize_zoh(A, B, dt)`: `A` is an invertible `(n, n)` tensor, `B` is `(n,)` or `(n, m)`; return
#   `(Abar, Bbar)` of the same shapes.
# - `ssm_kernel(Abar, Bbar, C, L)`: the kernel `K` of shape `(L,)` for a single-input single-output SSM
#   (`Bbar`, `C` of shape `(n,)`).
# - `causal_conv(K, u)`: $y_t = \sum_{k\le t} K_k u_{t-k}$ along the last axis of `u` (any leading axes,
#   `u.shape[-1] == len(K)`). Output `t` must not depend on inputs after `t`.

# %% solution id=discretize
def discretize_zoh(A, B, dt):
    """Zero-order hold: (exp(dt A), A^-1 (exp(dt A) - I) B)."""
    ### BEGIN SOLUTION
    Abar = torch.linalg.matrix_exp(dt * A)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    Bbar = torch.linalg.solve(A, (Abar - eye) @ B)
    return Abar, Bbar
    ### END SOLUTION

# %% tests id=test_discretize points=2
A1 = torch.tensor([[-2.0]], dtype=torch.float64)
B1 = torch.tensor([3.0], dtype=torch.float64)
Abar1, Bbar1 = discretize_zoh(A1, B1, 0.25)
check_close(Abar1, [[math.exp(-0.5)]], rtol=1e-10, name="Abar for A=-2, dt=0.25")
check_close(Bbar1, [1.5 * (1 - math.exp(-0.5))], rtol=1e-10,
            name="Bbar for A=-2, B=3, dt=0.25 (zero-order hold, not Euler's dt*B)")
### BEGIN HIDDEN TESTS
from scipy.signal import cont2discrete

for n, m, dt, seed in ((3, 1, 0.05, 0), (5, 2, 0.31, 1), (2, 1, 1.7, 2)):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M - (torch.linalg.eigvals(M).real.max() + 0.5) * torch.eye(n, dtype=torch.float64)
    B = torch.randn(n, m, generator=g, dtype=torch.float64)
    Ad, Bd, *_ = cont2discrete((A.numpy(), B.numpy(), np.ones((1, n)), np.zeros((1, m))), dt, method="zoh")
    Abar, Bbar = discretize_zoh(A, B, dt)
    check_close(Abar, Ad, rtol=1e-9, atol=1e-12, name=f"Abar (n={n}, dt={dt})")
    check_close(Bbar, Bd, rtol=1e-9, atol=1e-12, name=f"Bbar (n={n}, m={m}, dt={dt})")
    _, Bvec = discretize_zoh(A, B[:, 0], dt)
    check_close(Bvec, Bd[:, 0], rtol=1e-9, atol=1e-12, name=f"Bbar for a vector B (n={n})")
### END HIDDEN TESTS

# %% solution id=conv_view
def ssm_kernel(Abar, Bbar, C, L):
    """K_k = C Abar^k Bbar for k = 0..L-1."""
    ### BEGIN SOLUTION
    out, v = [], Bbar.clone()
    for _ in range(L):
        out.append(C @ v)
        v = Abar @ v
    return torch.stack(out)
    ### END SOLUTION


def causal_conv(K, u):
    """y_t = sum_{k<=t} K_k u_{t-k} along the last axis of u."""
    ### BEGIN SOLUTION
    L = u.shape[-1]
    flat = u.reshape(-1, 1, L)
    y = F.conv1d(F.pad(flat, (L - 1, 0)), K.flip(0).reshape(1, 1, -1))
    return y.reshape(u.shape)
    ### END SOLUTION

# %% tests id=test_conv_view points=2
g = torch.Generator().manual_seed(6)
Ab = torch.linalg.matrix_exp(-0.3 * torch.eye(3, dtype=torch.float64)
                             + 0.1 * torch.randn(3, 3, generator=g, dtype=torch.float64))
Bb, Cv = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
u = torch.randn(2, 9, generator=g, dtype=torch.float64)
K = ssm_kernel(Ab, Bb, Cv, 9)
check_property(tuple(K.shape) == (9,), f"ssm_kernel(..., L=9) should have shape (9,), got {tuple(K.shape)}")
check_close(K[0], Cv @ Bb, rtol=1e-10, name="K[0] (should be C·Bbar)")
check_close(causal_conv(K, u), ssm_recurrent(Ab, Bb, Cv, u), rtol=1e-9, atol=1e-12,
            name="convolution view vs recurrent view")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w06_mamba as ref

for n, L, lead, seed in ((4, 1, (), 0), (5, 23, (3,), 1), (2, 40, (2, 2), 2)):
    g = torch.Generator().manual_seed(100 + seed)
    Ab = torch.linalg.matrix_exp(-0.2 * torch.eye(n, dtype=torch.float64)
                                 + 0.1 * torch.randn(n, n, generator=g, dtype=torch.float64))
    Bb, Cv = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    u = torch.randn(*lead, L, generator=g, dtype=torch.float64)
    K = ssm_kernel(Ab, Bb, Cv, L)
    check_close(K, ref.ssm_kernel(Ab, Bb, Cv, L), rtol=1e-9, atol=1e-12, name=f"ssm_kernel (n={n}, L={L})")
    y = causal_conv(K, u)
    check_close(y, ref.ssm_recurrent(Ab, Bb, Cv, u), rtol=1e-9, atol=1e-12, name=f"causal_conv (L={L})")
    if L > 1:
        flat = u.reshape(-1, L)[0].numpy()
        check_close(y.reshape(-1, L)[0], np.convolve(flat, K.numpy())[:L], rtol=1e-9, atol=1e-12,
                    name=f"causal_conv vs numpy's convolution truncated to the first L outputs (L={L})")
        u2 = u.clone()
        u2[..., L // 2] += 1.0
        check_close(causal_conv(K, u2)[..., :L // 2], y[..., :L // 2], rtol=0, atol=1e-12,
                    name="outputs before a changed input (the convolution must be causal)")
### END HIDDEN TESTS

# %% markdown
# The kernel of a stable SSM decays like the powers of $\bar A$'s eigenvalues: that decay is the model's memory.
# Here both views of one random SSM, and its kernel:

# %%
import matplotlib.pyplot as plt

g = torch.Generator().manual_seed(0)
A_demo = -torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)) \
    + 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)
B_demo, C_demo = torch.ones(3, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
u_demo = torch.randn(64, generator=g, dtype=torch.float64)
try:
    Ab_d, Bb_d = discretize_zoh(A_demo, B_demo, 0.1)
    K_d = ssm_kernel(Ab_d, Bb_d, C_demo, 64)
    y_rec, y_conv = ssm_recurrent(Ab_d, Bb_d, C_demo, u_demo), causal_conv(K_d, u_demo)
    print(f"largest |recurrent - convolution|: {(y_rec - y_conv).abs().max().item():.2e}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    axes[0].plot(K_d.numpy(), marker=".")
    axes[0].set_title("kernel K_k = C Ā^k B̄")
    axes[0].set_xlabel("k")
    axes[1].plot(y_rec.numpy(), label="recurrent")
    axes[1].plot(y_conv.numpy(), "--", label="convolution")
    axes[1].set_title("the two views")
    axes[1].legend()
    plt.show()
except NotImplementedError:
    print("finish Exercise 1 first")

# %% markdown
# ## 2. The selective scan of Mamba
#
# S4's $A, B, C, \Delta$ are the same for every token, so it cannot decide *what* to remember. Mamba (Gu & Dao,
# 2023) makes $\Delta, B, C$ functions of the input: a large $\Delta_t$ resets the state towards the current
# token, a small one lets it pass. Each of the $d$ channels has its own diagonal SSM with $n$ states.
# In the notation of mamba_ssm's `selective_scan_ref` (shapes: `u, delta` are `(batch, d, L)`, `A` is `(d, n)`,
# `B, C` are `(batch, n, L)`, `D` is `(d,)`, `z` is `(batch, d, L)`, `delta_bias` is `(d,)`):
#
# $$\Delta = \mathrm{softplus}(\Delta + \text{bias}),\quad \bar A_t = e^{\Delta_t A},\quad \bar B_t u_t = \Delta_t B_t u_t,$$
# $$x_t = \bar A_t \odot x_{t-1} + \bar B_t u_t, \qquad y_t = C_t\cdot x_t + D\,u_t, \qquad
# y \leftarrow y \odot \mathrm{silu}(z).$$
#
# Here $x_t$ has shape `(batch, d, n)`: $\bar A_t[b, c, :] = \exp(\Delta_t[b, c]\,A[c, :])$ and
# $\bar B_t u_t[b, c, :] = \Delta_t[b, c]\,B_t[b, :]\,u_t[b, c]$. In a trained model $A = -\exp(A_{\log})$, so every
# $\bar A_t$ lies in $(0, 1)$: the state decays, it never explodes.
#
# ### Exercise 2 (4 points)
# Write `selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None)`, sequential over the `L` positions,
# returning `(y, last_state)`: `y` of shape `(batch, d, L)` and the state after the last token,
# `(batch, d, n)`. Skip the `D` term when `D is None`, the gate when `z is None`, the bias when `delta_bias is None`
# — but always apply the softplus. The hidden tests compare with transformers' own scan in float64.

# %% solution id=selective_scan
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Mamba's selective scan, one position at a time; returns (y, last_state)."""
    ### BEGIN SOLUTION
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    delta = F.softplus(delta)
    batch, d, L = u.shape
    x = torch.zeros(batch, d, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A)
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        x = dA * x + dBu
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x
    ### END SOLUTION

# %% tests id=test_selective_scan points=4
g = torch.Generator().manual_seed(1)
u = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
dl = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
A = -torch.rand(3, 4, generator=g, dtype=torch.float64)
B, C = torch.randn(2, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
y, state = selective_scan(u, dl, A, B, C)
check_property(tuple(y.shape) == (2, 3, 5), f"y should have shape (batch, d, L) = (2, 3, 5), got {tuple(y.shape)}")
check_property(tuple(state.shape) == (2, 3, 4),
               f"last_state should have shape (batch, d, n) = (2, 3, 4), got {tuple(state.shape)}")
# the first position by hand: x_0 = softplus(delta_0) * B_0 * u_0, y_0 = C_0 · x_0
d0 = F.softplus(dl[:, :, 0])
x0 = d0[:, :, None] * B[:, None, :, 0] * u[:, :, 0, None]
check_close(y[:, :, 0], (x0 * C[:, None, :, 0]).sum(-1), rtol=1e-10, atol=1e-12, name="y at the first position")
# later positions: a vanishing step (softplus(-40) ≈ 4e-18) must carry the state through unchanged, so after the
# first position the state stays x_0 and the output is C_t · x_0
dl_keep = torch.cat([dl[:, :, :1], torch.full_like(dl[:, :, 1:], -40.0)], -1)
y_keep, state_keep = selective_scan(u, dl_keep, A, B, C)
check_close(y_keep[:, :, 1:], (x0[..., None] * C[:, None]).sum(2)[:, :, 1:], rtol=1e-9, atol=1e-12,
            name="y at positions 1.. when delta is about 0 there (a tiny step must keep the state, not decay it)")
check_close(state_keep, x0, rtol=1e-9, atol=1e-12, name="last_state when delta is about 0 after the first position")
### BEGIN HIDDEN TESTS
from transformers.models.mamba.modeling_mamba import mamba_selective_scan

from sparkcourse.reference import w06_mamba as ref

for b, d, n, L, seed in ((1, 1, 1, 1, 0), (2, 5, 3, 11, 1), (3, 7, 16, 29, 2)):
    g = torch.Generator().manual_seed(seed)

    def r(*s, g=g):  # float32-representable float64 values: transformers casts u and B to float32 in its scan
        return torch.randn(*s, generator=g).double()

    kw = dict(u=r(b, d, L), delta=r(b, d, L), A=-torch.rand(d, n, generator=g).double() - 0.1, B=r(b, n, L),
              C=r(b, n, L), D=r(d), z=r(b, d, L), delta_bias=0.5 * r(d))
    want, want_state = mamba_selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                                            delta_bias=kw["delta_bias"], delta_softplus=True,
                                            return_last_state=True)
    got, got_state = selective_scan(**kw)
    check_close(got, want, rtol=1e-9, atol=1e-11, name=f"y vs transformers (b={b}, d={d}, n={n}, L={L})")
    check_close(got_state, want_state, rtol=1e-9, atol=1e-11, name=f"last_state vs transformers (L={L})")
    for drop in ("D", "z", "delta_bias"):
        part = {k: (None if k == drop else v) for k, v in kw.items()}
        check_close(selective_scan(**part)[0], ref.selective_scan(**part)[0], rtol=1e-9, atol=1e-11,
                    name=f"y with {drop}=None (L={L})")
### END HIDDEN TESTS

# %% markdown
# **Selection at work.** With one channel and $A=-1$, feed a sequence of ones but make $\Delta$ large at one
# position only: the state forgets everything before it and writes the current input. A time-invariant SSM
# (the same $\Delta$ everywhere) cannot do this.

# %%
try:
    L_demo = 12
    u1 = torch.ones(1, 1, L_demo, dtype=torch.float64)
    for name, raw in (("constant delta", torch.full((1, 1, L_demo), -2.0, dtype=torch.float64)),
                      ("delta large at t=6", torch.where(torch.arange(L_demo) == 6, 8.0, -6.0)
                       .double().reshape(1, 1, -1))):
        y_sel, _ = selective_scan(u1 * torch.arange(L_demo).double(), raw, -torch.ones(1, 1, dtype=torch.float64),
                                  torch.ones(1, 1, L_demo, dtype=torch.float64),
                                  torch.ones(1, 1, L_demo, dtype=torch.float64))
        print(f"{name:20s} y = {np.round(y_sel[0, 0].numpy(), 2)}")
except NotImplementedError:
    print("finish Exercise 2 first")

# %% markdown
# ## 3. A parallel scan
#
# The loop above takes $L$ dependent steps. But the recurrence $x_t = a_t x_{t-1} + b_t$ composes: applying
# $(a_1, b_1)$ then $(a_2, b_2)$ is the single step $(a_1a_2,\; a_2 b_1 + b_2)$, and that operator is
# **associative**. So prefix results can be combined in a tree: the **Hillis–Steele** scan doubles a stride
# $s = 1, 2, 4, \dots$ and at each step combines every position $t \ge s$ with position $t - s$ — $\lceil\log_2
# L\rceil$ steps, each fully parallel. (Blelloch's scan does the same in two sweeps with less total work.) This is
# how Mamba trains fast on a GPU: its CUDA kernel scans in parallel within a block.
#
# ### Exercise 3 (3 points)
# Write `parallel_scan(a, b)`: the same result as `sequential_scan(a, b)` for tensors of any leading shape, along
# the last axis, in O(log L) vectorised steps (no Python loop over positions). Position `t` may only combine with
# positions before it. The hidden tests count your torch operations at two lengths.

# %% solution id=parallel_scan
def parallel_scan(a, b):
    """x_t = a_t x_{t-1} + b_t along the last axis in O(log L) Hillis-Steele steps."""
    ### BEGIN SOLUTION
    L, s = b.shape[-1], 1
    while s < L:
        b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1)
        a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1)
        s *= 2
    return b
    ### END SOLUTION

# %% tests id=test_parallel_scan points=3
g = torch.Generator().manual_seed(3)
a = torch.rand(2, 13, generator=g, dtype=torch.float64)
b = torch.randn(2, 13, generator=g, dtype=torch.float64)
check_close(parallel_scan(a, b), sequential_scan(a, b), rtol=1e-10, atol=1e-12, name="parallel_scan vs sequential")
### BEGIN HIDDEN TESTS
for shape, seed in (((1,), 0), ((3, 2), 1), ((4, 31), 2), ((2, 3, 100), 3), ((257,), 4)):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=g, dtype=torch.float64)
    b = torch.randn(*shape, generator=g, dtype=torch.float64)
    a0, b0 = a.clone(), b.clone()
    x = parallel_scan(a, b)
    check_property(torch.equal(a, a0) and torch.equal(b, b0), "parallel_scan must not modify its inputs")
    check_close(x, sequential_scan(a, b), rtol=1e-9, atol=1e-12, name=f"parallel_scan, shape {shape}")
    L = shape[-1]
    if L > 2:
        b2 = b.clone()
        b2[..., L // 2] += 1.0
        check_close(parallel_scan(a, b2)[..., :L // 2], x[..., :L // 2], rtol=0, atol=1e-12,
                    name=f"outputs before a changed input (a scan must not look at future positions), L={L}")
g = torch.Generator().manual_seed(9)
ops = {L: count_torch_ops(parallel_scan, torch.rand(2, L, generator=g, dtype=torch.float64),
                          torch.randn(2, L, generator=g, dtype=torch.float64)) for L in (32, 1024)}
check_property(ops[1024] <= 4 * max(ops[32], 1) and ops[1024] < 1024,
               f"torch operations: {ops[32]} at L=32, {ops[1024]} at L=1024 — that grows like L, not log L")
### END HIDDEN TESTS

# %% markdown
# **Speed as L grows.** The sequential scan makes $L$ small torch calls; the parallel one $\lceil\log_2 L\rceil$
# steps of bigger ones, doing $O(L\log L)$ work instead of $O(L)$. How many channels does a real layer scan? The
# cell below reads it from the shipped `config.json` of **Mamba-130M** (`state-spaces/mamba-130m-hf`): each of its
# layers keeps a `d_inner × n` state per sequence with `d_inner = expand × hidden_size`. The spark profile times
# that full layer on the GPU (CUDA events); the tiny profile times a 64 × 16 slice of it on the CPU (while
# grading, only short lengths run).

# %%
from sparkcourse import hub

m130 = hub.shipped_config("state-spaces/mamba-130m-hf")
d_inner_130m = int(m130["expand"] * m130["hidden_size"])
print(f"Mamba-130M: hidden {m130['hidden_size']}, expand {m130['expand']} -> d_inner {d_inner_130m}; "
      f"state per layer and sequence: {d_inner_130m} x {m130['state_size']} values "
      f"({m130['num_hidden_layers']} layers)")
scan_d, scan_n = (d_inner_130m, m130["state_size"]) if FULL else (64, 16)
lengths = [16, 64, 256] if sc.grading() else profile.pick([16, 64, 256, 1024, 4096], [16, 64, 256, 1024, 4096, 16384])
print(f"timing on {DEVICE.type}: d x n = {scan_d} x {scan_n}" + ("" if FULL else " (a slice of the real layer)"))
timings = {}
try:
    for L in lengths:
        a = torch.rand(scan_d, scan_n, L, device=DEVICE)
        b = torch.randn(scan_d, scan_n, L, device=DEVICE)
        parallel_scan(a, b)  # warm-up
        timings[("sequential", L)], want = timed(sequential_scan, a, b)
        timings[("parallel", L)], got = timed(parallel_scan, a, b)
        err = ((got - want).abs().max() / want.abs().max()).item()
        print(f"L={L:6d}  sequential {timings[('sequential', L)] * 1e3:9.2f} ms   "
              f"parallel {timings[('parallel', L)] * 1e3:8.2f} ms   largest relative difference {err:.1e}")
        del a, b, want, got
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("sequential", "-o"), ("parallel", "--s")):
        ax.plot(lengths, [timings[(kind, L)] * 1e3 for L in lengths], style, label=kind)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("time (ms, best of 3)")
    ax.set_title(f"linear recurrence, {scan_d} x {scan_n} channels, on {DEVICE.type} (measured)")
    ax.legend()
    plt.show()
except NotImplementedError:
    print("finish Exercise 3 first")

# %% markdown
# Read your own table: on a CPU with few cores the parallel scan trades $L$ tiny Python-level steps for
# $\lceil\log_2 L\rceil$ large ones that do $O(L\log L)$ work and copy the whole tensor each step, so it can win
# or lose depending on $L$, the tensor size and the machine. The parallel hardware that makes it pay is a GPU
# (the spark profile's table). Mamba's real
# kernel goes further: it keeps the state in on-chip SRAM and never writes the `(batch, d, L, n)` tensor of all
# states to memory — the scan above does, which is why it is a teaching version.

# %% markdown
# ## 4. A Mamba block
#
# transformers' `MambaMixer` (the layer inside every `MambaBlock`, after an RMSNorm and before the residual add)
# does, for `x` of shape `(batch, L, hidden)` and `d = expand × hidden` inner channels:
#
# 1. `in_proj`: a linear map to `2d` features, split into the SSM input `h` and the gate `z`;
# 2. a **causal depthwise** `conv1d` over time on `h` (one kernel of width `conv_kernel` per channel, with bias):
#    output `t` sees inputs `t - conv_kernel + 1 … t` only; then SiLU;
# 3. `x_proj`: from `h` to `time_step_rank + 2n` features, split into a low-rank $\Delta$, `B` and `C`;
#    `dt_proj` (its weight only) maps the low-rank $\Delta$ to `d` channels — its **bias is the `delta_bias`**
#    of the scan;
# 4. the selective scan with $A = -\exp(A_{\log})$, `D` and the gate `z`;
# 5. `out_proj` back to `hidden` features.
#
# The mixer's state dict has `in_proj.weight`, `conv1d.weight` `(d, 1, conv_kernel)`, `conv1d.bias`,
# `x_proj.weight`, `dt_proj.weight`, `dt_proj.bias`, `A_log` `(d, n)`, `D`, `out_proj.weight` (and
# `in_proj.bias`, `out_proj.bias` when the config has `use_bias=True`). In transformers 5.23 the mixer's forward
# *is* the PyTorch path when the `mamba_ssm`/`causal_conv1d` kernels are absent, as here.

# %% markdown
# ### Exercise 4 (4 points)
# Write `mamba_mixer(x, sd)`: the mixer's forward (no cache) from its state dict `sd`, using your
# `selective_scan`. Read every size from the tensors' shapes. The tests run in float64 and accept float32
# working precision inside the mixer: computing $A = -\exp(A_{\log})$ (or the scan's inputs) in float32, as
# `MambaMixer` itself does, passes — outputs are compared with `MambaMixer` and with a float64 computation to a
# relative $10^{-5}$.

# %% solution id=mixer
def mamba_mixer(x, sd):
    """MambaMixer forward from its state dict: (batch, L, hidden) -> (batch, L, hidden)."""
    ### BEGIN SOLUTION
    d, n = sd["A_log"].shape
    rank, k = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[-1]
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
    ### END SOLUTION

# %% tests id=test_mixer points=4
model, cfg = tiny_mamba(seed=0)
mixer = model.layers[0].mixer
x = torch.randn(2, 7, cfg["hidden_size"], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
with torch.no_grad():
    got, want = mamba_mixer(x, mixer.state_dict()), mixer(x)
check_property(tuple(got.shape) == tuple(want.shape), f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}")
# transformers computes A = -exp(A_log) in float32, so the agreement is ~1e-7, not 1e-12
check_close(got, want, rtol=1e-5, atol=1e-6, name="mamba_mixer vs transformers' MambaMixer")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w06_mamba as ref

for seed, over, L in ((1, {"conv_kernel": 4, "state_size": 3, "use_bias": True}, 11),
                      (2, {"hidden_size": 6, "expand": 3, "time_step_rank": 2}, 1),
                      (3, {"state_size": 7, "conv_kernel": 2}, 17)):
    model, cfg = tiny_mamba(seed=seed, **over)
    mixer = model.layers[1].mixer
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn(mixer.A_log.shape, generator=g, dtype=torch.float64))
        mixer.D.add_(torch.randn(mixer.D.shape, generator=g, dtype=torch.float64))
        mixer.conv1d.bias.add_(torch.randn(mixer.conv1d.bias.shape, generator=g, dtype=torch.float64))
        x = torch.randn(3, L, cfg["hidden_size"], generator=g, dtype=torch.float64)
        sd = {k: v.clone() for k, v in mixer.state_dict().items()}
        got = mamba_mixer(x, sd)
        check_close(got, mixer(x), rtol=1e-5, atol=1e-6, name=f"mamba_mixer vs MambaMixer ({over}, L={L})")
        # float32 internals (as MambaMixer's own A = -exp(A_log.float())) are announced as accepted: 1e-5, not 1e-9
        check_close(got, ref.mamba_mixer(x, sd), rtol=1e-5, atol=1e-6, name=f"mamba_mixer vs float64 ({over})")
        if L > 4:
            x2 = x.clone()
            x2[:, L // 2] += 1.0
            check_close(mamba_mixer(x2, sd)[:, :L // 2], got[:, :L // 2], rtol=0, atol=1e-9,
                        name="outputs before a changed token (the conv and the scan must be causal)")
### END HIDDEN TESTS

# %% markdown
# Your mixer *is* Mamba: wrap it in the block's RMSNorm and residual and stack the blocks, and you reproduce a
# whole `MambaModel`. Check it on the tiny model:

# %%
try:
    model, cfg = tiny_mamba(seed=5)
    ids = torch.randint(0, cfg["vocab_size"], (2, 9))
    with torch.no_grad():
        h = model.embeddings(ids)
        for block in model.layers:
            h = h + mamba_mixer(block.norm(h), block.mixer.state_dict())
        mine, theirs = model.norm_f(h), model(ids).last_hidden_state
    print(f"whole model, largest difference: {(mine - theirs).abs().max().item():.2e}")
except NotImplementedError:
    print("finish Exercise 4 first")

# %% markdown
# ## 5. Selection needs selectivity: Mamba, a time-invariant Mamba and a Transformer (demo, not graded)
#
# **Selective copying** (Gu & Dao 2023, §3.1): a sequence of mostly blank tokens hides a few content tokens at
# random positions; after a separator, the model must output the content tokens in order. The claim is that a
# time-invariant SSM cannot ignore the blanks at variable distances, while attention and a selective SSM can.
# Here it is tested, not asserted: we train three models of similar size for the same number of steps and compare
# per-token accuracy on the answer:
# - a tiny `MambaForCausalLM` (selective: $\Delta, B, C$ computed from each token);
# - **the same Mamba made time-invariant** (the ablation): in every layer `x_proj`, which computes $\Delta, B, C$
#   from the token, is replaced by learned constants, so $\Delta$ is a constant per channel and $B, C$ are the
#   same at every position — an LTI SSM, still with the causal conv and the gate;
# - a tiny `LlamaForCausalLM` (attention).
#
# All are built from configs (no download). The cell skips itself while grading. The tiny profile trains 120 steps
# on sequences of 24 blanks and 4 symbols on the CPU (a few minutes on 2 cores: transformers' pure-PyTorch Mamba
# scan is a Python loop over positions); the spark profile trains 1500 steps of 64-wide models on the GPU (about a
# minute or two per model on a data-centre GPU).

# %%
def selective_copy_batch(batch, n_mem=4, T=24, n_sym=8, gen=None):
    """Inputs, targets and an answer mask: blanks (0) with n_mem symbols (2..) hidden, a separator (1), answers."""
    seq = torch.zeros(batch, T, dtype=torch.long)
    symbols = torch.randint(2, 2 + n_sym, (batch, n_mem), generator=gen)
    for i in range(batch):
        pos = torch.randperm(T, generator=gen)[:n_mem].sort().values
        seq[i, pos] = symbols[i]
    full = torch.cat([seq, torch.ones(batch, 1, dtype=torch.long), symbols], 1)
    mask = torch.zeros(batch, full.shape[1] - 1, dtype=torch.bool)
    mask[:, -n_mem:] = True
    return full[:, :-1].to(DEVICE), full[:, 1:].to(DEVICE), mask.to(DEVICE)


class ConstantProjection(torch.nn.Module):
    """Stands in for a MambaMixer's x_proj: learned (Δ-rank, B, C) values, the same for every token."""

    def __init__(self, x_proj):
        super().__init__()
        self.value = torch.nn.Parameter(0.5 * torch.randn(x_proj.out_features))

    def forward(self, h):
        return self.value.expand(*h.shape[:-1], -1)


def make_time_invariant(model):
    """The Mamba ablation: Δ, B, C no longer depend on the input (an LTI SSM in every layer)."""
    for layer in model.backbone.layers:
        layer.mixer.x_proj = ConstantProjection(layer.mixer.x_proj)
    return model


def train_copy(model, steps, batch=32, lr=3e-3, seed=0, **task):
    """Train on selective copying; return the accuracy on the answer tokens of a fresh batch of 512."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    # No dropout in these models, so eval mode changes nothing in the maths; it keeps transformers on its PyTorch
    # path (a fused mamba_ssm training kernel, where installed, would read x_proj's weight and skip the ablation).
    model.eval()
    for _ in range(steps):
        inp, tgt, mask = selective_copy_batch(batch, gen=gen, **task)
        logits = model(input_ids=inp).logits
        loss = F.cross_entropy(logits[mask], tgt[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    inp, tgt, mask = selective_copy_batch(512, gen=torch.Generator().manual_seed(seed + 1), **task)
    with torch.no_grad():
        pred = model(input_ids=inp).logits.argmax(-1)
    return (pred[mask] == tgt[mask]).float().mean().item()


copy_results = {}
if sc.grading():
    print("training demo skipped while grading")
else:
    from transformers import MambaConfig, MambaForCausalLM

    from sparkcourse.models import random_llama

    steps, width, batch = (1500, 64, 64) if FULL else (120, 32, 32)
    task = dict(T=24, n_mem=4, n_sym=8)

    def copy_mamba():
        return MambaForCausalLM(MambaConfig(vocab_size=10, hidden_size=width, state_size=8, num_hidden_layers=2,
                                            expand=2, conv_kernel=4))

    torch.manual_seed(0)
    tiny_models = {
        f"Mamba (2 layers, d={width}, n=8)": copy_mamba,
        "Mamba, time-invariant (constant Δ, B, C)": lambda: make_time_invariant(copy_mamba()),
        f"Transformer (2 layers, d={width}, 4 heads)": lambda: random_llama(
            None, vocab_size=10, hidden_size=width, intermediate_size=3 * width, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=False),
    }
    print(f"{'model':42s} {'parameters':>10s} {'accuracy':>9s} {'seconds':>8s}   "
          f"({steps} steps of {batch} on {DEVICE.type}, chance 1/{task['n_sym']})")
    for name, build in tiny_models.items():
        torch.manual_seed(0)
        m = build().to(DEVICE)
        seconds, acc = timed(train_copy, m, steps, batch, repeat=1, **task)
        copy_results[name] = acc
        print(f"{name:42s} {sum(p.numel() for p in m.parameters()):10,d} {acc:9.3f} {seconds:8.1f}")
        del m

# %% markdown
# Read the table. The time-invariant Mamba has the same layers, the same conv and gate and almost the same
# parameters as the selective one; only the dependence of $\Delta, B, C$ on the token is gone. If it stays far
# below the selective Mamba, that is the paper's point (Gu & Dao 2023, Table 1: S4 18.3% and H3 57.0% against
# Mamba 99.8% on their longer version of the task): an LTI SSM applies the same convolution kernel everywhere, so
# it cannot skip a variable number of blanks. The tiny profile's 120 steps only show that the code runs: on a
# 2-core CPU the selective Mamba itself was still at chance after them (0.13 measured, 2026-11-29). The comparison
# needs the spark profile's 1500 steps on a GPU (or more steps on a CPU, and patience). The claim is not "Mamba
# beats attention": at this size attention does well on copying.

# %% markdown
# ## 6. Memory and time as the context grows
#
# While generating, a transformer keeps $2 \times \text{layers} \times h_{kv} \times d_h$ values per token of
# context (week 00). A Mamba model keeps, per layer and per sequence, a **conv state** (`d × conv_kernel`: the
# last inputs of the causal conv) and an **SSM state** (`d × n`) — whatever the context length.
#
# ### Exercise 5 (3 points)
# - `recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0)` for a `MambaConfig`-style dict with
#   `hidden_size`, `expand`, `state_size`, `conv_kernel`, `num_hidden_layers`: the bytes of all layers' conv and
#   SSM states for `batch` sequences.
# - `kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0)` for a Llama-style dict (week 00's keys;
#   `head_dim` may be present): the KV-cache bytes for `batch` sequences of `context` tokens.
#
# The hidden tests compare with the tensors that transformers' `DynamicCache` really holds.

# %% solution id=memory
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    """Conv + SSM state bytes of a Mamba model, all layers, `batch` sequences (independent of the context)."""
    ### BEGIN SOLUTION
    d = int(cfg["expand"] * cfg["hidden_size"])
    return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value
    ### END SOLUTION


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    """KV-cache bytes of a Llama-style model for `batch` sequences of `context` tokens."""
    ### BEGIN SOLUTION
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * context * batch * bytes_per_value
    ### END SOLUTION

# %% tests id=test_state_bytes points=2
model, cfg = tiny_mamba(seed=0)
with torch.no_grad():
    cache = model(torch.randint(0, 31, (2, 6)), use_cache=True).cache_params
held = cache_bytes([t for layer in cache.layers for s in (layer.conv_states, layer.recurrent_states)
                    for t in s.values()])
check_number(recurrent_state_bytes(cfg, batch=2, bytes_per_value=8), held, rtol=1e-12,
             name="recurrent_state_bytes of the tiny float64 model, batch 2 (vs its DynamicCache)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w06_mamba as ref

for seed, over, batch, L in ((1, {"conv_kernel": 4, "state_size": 3, "num_hidden_layers": 3}, 3, 5),
                             (2, {"hidden_size": 6, "expand": 3}, 1, 19)):
    model, cfg = tiny_mamba(seed=seed, **over)
    model = model.float()
    with torch.no_grad():
        cache = model(torch.randint(0, 31, (batch, L)), use_cache=True).cache_params
    held = cache_bytes([t for layer in cache.layers for s in (layer.conv_states, layer.recurrent_states)
                        for t in s.values()])
    check_number(recurrent_state_bytes(cfg, batch=batch, bytes_per_value=4), held, rtol=1e-12,
                 name=f"recurrent_state_bytes vs DynamicCache ({over}, batch {batch}, float32)")
mamba28 = dict(hidden_size=2560, num_hidden_layers=64, state_size=16, conv_kernel=4, expand=2)
check_number(recurrent_state_bytes(mamba28), ref.recurrent_state_bytes(mamba28), rtol=1e-12,
             name="recurrent_state_bytes of Mamba-2.8B at 2 bytes per value")
### END HIDDEN TESTS

# %% tests id=test_kv_bytes points=1
llama70b = CONFIGS["meta-llama/Meta-Llama-3-70B"]
check_number(kv_cache_bytes(llama70b, 1000) / MB, 327.68, rtol=1e-9,
             name="Llama-3-70B KV cache for 1000 tokens at FP16, in MB")
### BEGIN HIDDEN TESTS
from sparkcourse.models import random_llama
from sparkcourse.reference import w06_mamba as ref

for over, batch, L in (({}, 3, 11), ({"head_dim": 6, "num_key_value_heads": 1}, 2, 7)):
    lcfg = dict(vocab_size=31, hidden_size=24, intermediate_size=20, num_hidden_layers=3, num_attention_heads=6,
                num_key_value_heads=2) | over
    lm = random_llama(0, base_model=True, **lcfg)
    with torch.no_grad():
        kv = lm(torch.randint(0, 31, (batch, L)), use_cache=True).past_key_values
    held = cache_bytes([t for layer in kv.layers for t in (layer.keys, layer.values)])
    check_number(kv_cache_bytes(lcfg, L, batch=batch, bytes_per_value=4), held, rtol=1e-12,
                 name=f"kv_cache_bytes vs DynamicCache ({over}, batch {batch}, {L} tokens)")
for name in ("meta-llama/Meta-Llama-3-8B", "mistralai/Mixtral-8x7B-v0.1"):
    check_number(kv_cache_bytes(CONFIGS[name], 4321, 2, 1.0), 4321 * 2 * capacity.kv_bytes_per_token(CONFIGS[name], 1.0),
                 rtol=1e-12, name=f"kv_cache_bytes({name}, 4321 tokens, batch 2, FP8)")
### END HIDDEN TESTS

# %% markdown
# **Measured.** A Mamba and a Llama of the same width and depth (random weights, built from configs): prefill a
# context, then generate tokens one at a time from the cache, recording the bytes the cache holds, the time per
# generated token and, on a GPU, the peak memory CUDA allocated during the prefill. The prefill asks for
# `logits_to_keep=1`: generation needs only the last position's logits, and keeping all of them (`context ×
# vocab` values — 2.1 GB in bf16 for a 32K-token prompt and a 32K vocabulary) would swamp the cache being
# measured. Tiny profile: 64 wide, 4 layers, on the CPU; spark profile: 1024 wide, 8 layers, contexts to 16K,
# on the GPU (timed with CUDA events).

# %%
def measure_decode(model, kind, context, new_tokens=8, vocab=31):
    """(cache bytes after the prompt, seconds per generated token, peak CUDA bytes of the prefill above what was
    allocated before it, or None on a CPU) for one prompt of `context` tokens."""
    ids = torch.randint(0, vocab, (1, context), device=DEVICE)
    key = "cache_params" if kind == "mamba" else "past_key_values"
    on_gpu = DEVICE.type == "cuda"
    with torch.no_grad():
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # only the next token's logits
        peak = torch.cuda.max_memory_allocated() - before if on_gpu else None
        cache = getattr(out, key)
        if kind == "mamba":
            held = cache_bytes([t for la in cache.layers for s in (la.conv_states, la.recurrent_states)
                                for t in s.values()])
        else:
            held = cache_bytes([t for la in cache.layers for t in (la.keys, la.values)])
        state = {"cache": cache, "next": out.logits[:, -1:].argmax(-1)}
        del out

        def decode(steps):
            for _ in range(steps):
                o = model(input_ids=state["next"], use_cache=True, logits_to_keep=1, **{key: state["cache"]})
                state["cache"], state["next"] = getattr(o, key), o.logits[:, -1:].argmax(-1)

        decode(1)  # warm-up
        seconds, _ = timed(decode, new_tokens, repeat=1)
    return held, seconds / new_tokens, peak


from transformers import MambaConfig, MambaForCausalLM

from sparkcourse.models import random_llama

torch.manual_seed(0)
width, layers = (1024, 8) if FULL else (64, 4)
decoders = {
    "mamba": MambaForCausalLM(MambaConfig(vocab_size=31, hidden_size=width, state_size=16, num_hidden_layers=layers,
                                          expand=2, conv_kernel=4)).eval().to(DEVICE),
    "llama": random_llama(None, vocab_size=31, hidden_size=width, intermediate_size=3 * width,
                          num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                          max_position_embeddings=1 << 16, tie_word_embeddings=False).to(DEVICE),
}
contexts = [16, 64, 256] if sc.grading() else ([256, 1024, 4096, 16384] if FULL else [16, 64, 256, 1024, 2048])
results = {k: [measure_decode(m, k, c) for c in contexts] for k, m in decoders.items()}
for k in decoders:
    for c, (nbytes, sec, peak) in zip(contexts, results[k], strict=True):
        extra = "" if peak is None else f"   prefill peak {peak / MB:9.1f} MB (CUDA, above the weights)"
        print(f"{k:6s} context {c:6d}: cache {nbytes / 1e3:10.1f} kB   {sec * 1e3:7.2f} ms per generated token{extra}")
if unified_available_bytes() is not None:
    print(f"unified memory still available (/proc/meminfo MemAvailable): {unified_available_bytes() / GB:.1f} GB")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for k, m in decoders.items():
    axes[0].plot(contexts, [r[0] / 1e3 for r in results[k]], "-o",
                 label=f"{k} ({sum(p.numel() for p in m.parameters()) / 1e6:.2f}M params)")
    axes[1].plot(contexts, [r[1] * 1e3 for r in results[k]], "-o", label=k)
axes[0].set_ylabel("cache held (kB, float32)")
axes[1].set_ylabel("time per generated token (ms)")
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.legend()
axes[0].set_title("cache vs context (measured)")
axes[1].set_title(f"decode time vs context (measured on {DEVICE.type}, width {width}, {layers} layers)")
plt.show()
del decoders
if DEVICE.type == "cuda":
    torch.cuda.empty_cache()

# %% markdown
# The memory curves are exact (they are the bytes of the cache tensors). The time curves at tiny size are
# dominated by Python and kernel-launch overhead; the attention cost per token grows with the context only once
# the context is long compared with the model's width — compare the first and last rows above, and run the spark
# profile for larger models. On the GPU, the Mamba prefill's peak grows with the context although its cache does
# not: transformers' PyTorch scan materialises $\bar A_t$ and $\bar B_t u_t$ for every position, a
# `(batch, d, L, n)` tensor; the fused `mamba_ssm` kernel keeps them in on-chip memory instead.
#
# **In 128 GB.** Llama-3-70B's KV cache (from week 00's planner) against the state of Mamba-2.8B
# (`state-spaces/mamba-2.8b-hf` config: 64 layers, hidden 2560, `state_size` 16, `conv_kernel` 4, `expand` 2)
# and of the hybrid **Jamba** (AI21; its config in transformers: 32 layers, one attention layer in 8 with 8 KV
# heads of 128, the rest Mamba):

# %%
from transformers import JambaConfig

jamba = JambaConfig()  # the defaults describe Jamba-v0.1 (transformers' docstring)
attn_layers = sum(1 for i in range(jamba.num_hidden_layers)
                  if i % jamba.attn_layer_period == jamba.attn_layer_offset)
jamba_kv = dict(hidden_size=jamba.hidden_size, num_attention_heads=jamba.num_attention_heads,
                num_key_value_heads=jamba.num_key_value_heads, num_hidden_layers=attn_layers)
jamba_ssm = dict(hidden_size=jamba.hidden_size, expand=jamba.mamba_expand, state_size=jamba.mamba_d_state,
                 conv_kernel=jamba.mamba_d_conv, num_hidden_layers=jamba.num_hidden_layers - attn_layers)
mamba28 = dict(hidden_size=2560, num_hidden_layers=64, state_size=16, conv_kernel=4, expand=2)
llama70 = CONFIGS["meta-llama/Meta-Llama-3-70B"]
mixtral = CONFIGS["mistralai/Mixtral-8x7B-v0.1"]
per_tok = capacity.kv_bytes_per_token(llama70, 2.0)
print(f"Llama-3-70B KV cache per token, FP16: {per_tok / MB:.3f} MB (week 00's planner)")
print(f"Jamba: {attn_layers} attention layers of {jamba.num_hidden_layers}")
try:
    print(f"{'context':>8s} {'Llama-3-70B KV':>15s} {'Mixtral KV':>11s} {'Jamba KV+state':>15s} {'Mamba-2.8B':>11s}")
    for ctx in (4096, 32768, 131072, 262144):
        jam = kv_cache_bytes(jamba_kv, ctx) + recurrent_state_bytes(jamba_ssm)
        print(f"{ctx:8d} {kv_cache_bytes(llama70, ctx) / GB:12.2f} GB {kv_cache_bytes(mixtral, ctx) / GB:8.2f} GB "
              f"{jam / GB:12.3f} GB {recurrent_state_bytes(mamba28) / GB:8.4f} GB")
    free = SPARK_BYTES - capacity.weight_bytes(capacity.param_count(llama70).total, "nvfp4")
    print(f"Llama-3-70B at NVFP4 leaves {free / GB:.1f} GB: {free / per_tok:,.0f} tokens of FP16 cache, "
          f"i.e. {free / per_tok / 131072:.1f} sequences of 128K; Mamba-2.8B's state at 2 bytes: "
          f"{free / recurrent_state_bytes(mamba28):,.0f} sequences of any length")
except NotImplementedError:
    print("finish Exercise 5 first")

# %% markdown
# **Check against the papers.** The Jamba paper (Lieber et al. 2024, Table 1) gives the KV cache at 256K
# tokens in 16-bit as 4 GB for Jamba and 32 GB for Mixtral — compare with the 262144-token row above (the paper's
# GB are binary, 2³⁰ bytes). **Granite 4.0** (IBM, October 2025 announcement) interleaves Mamba-2 and
# attention blocks about 9:1 and reports over 70% less memory than conventional transformers for long-context
# and multi-session inference; its H-Small model has 32B parameters in total and about 9B active. Those are the
# vendors' figures; the per-token arithmetic above is the part you can check yourself.
#
# A hybrid keeps a few attention layers because a fixed-size state must *compress* the context, and exact recall
# of an arbitrary earlier token is what compression loses; the attention layers' KV cache is the price of that
# recall, paid on only a fraction of the layers.

# %% markdown
# ## On your Spark
# In the spark profile the measurement above uses a 1024-wide, 8-layer pair of models and contexts up to 16K on
# the GPU. This cell puts two real architectures side by side in bf16 on the GPU, with random weights (what is
# measured is memory, which does not depend on the weights): a 1.1B Llama-style model (16 layers, 2048 wide,
# 4 KV heads of 128) and **Mamba-130M** built from its shipped `config.json`. For each prompt it reports the
# memory still allocated after the prefill (the cache; `logits_to_keep=1` keeps the logits out of it), the
# peak CUDA allocation during the prefill, and on a unified-memory Spark what `/proc/meminfo` still calls
# available (CUDA's own free-memory query under-reports there). About a minute on a data-centre GPU.

# %%
def prefill_memory(model, context, vocab):
    """(bytes still allocated after a prefill of `context` tokens, peak bytes during it, the cache), on CUDA."""
    import gc

    gc.collect()  # a previous prefill's output may still sit in a reference cycle: free it before the baseline
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, vocab, (1, context), device="cuda"), use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    cache = out.cache_params if hasattr(out, "cache_params") and out.cache_params is not None else out.past_key_values
    del out
    return torch.cuda.memory_allocated() - base, torch.cuda.max_memory_allocated() - base, cache


if not FULL:
    print("needs the spark profile and a CUDA GPU: skipped here (run it on a DGX Spark or any CUDA machine)")
else:
    from transformers import MambaForCausalLM

    llama_big = random_llama(None, vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                             num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4,
                             max_position_embeddings=32768, tie_word_embeddings=False).to("cuda", torch.bfloat16)
    torch.manual_seed(0)
    mamba_130m = MambaForCausalLM(hub.make_config(m130)).eval().to("cuda", torch.bfloat16)
    print(f"stand-ins with random weights: Llama-style {sum(p.numel() for p in llama_big.parameters()) / 1e9:.2f}B, "
          f"Mamba-130M {sum(p.numel() for p in mamba_130m.parameters()) / 1e6:.1f}M (state-spaces/mamba-130m-hf "
          "config)")
    try:
        for ctx in (1024, 8192, 32768):
            held, peak, cache = prefill_memory(llama_big, ctx, 32000)
            print(f"Llama-style context {ctx:6d}: {held / GB:6.3f} GB held after prefill "
                  f"(KV by your formula {kv_cache_bytes(llama_big.config.to_dict(), ctx) / GB:.3f} GB), "
                  f"prefill peak {peak / GB:6.3f} GB")
            del cache
        for ctx in (1024, 8192):
            held, peak, cache = prefill_memory(mamba_130m, ctx, m130["vocab_size"])
            tensors = [t for la in cache.layers for st in (la.conv_states, la.recurrent_states) for t in st.values()]
            # transformers keeps the conv state in the model's dtype (bf16) and the SSM state in float32
            by_formula = (recurrent_state_bytes(m130 | {"state_size": 0}, bytes_per_value=2)
                          + recurrent_state_bytes(m130 | {"conv_kernel": 0}, bytes_per_value=4))
            print(f"Mamba-130M  context {ctx:6d}: {held / MB:6.2f} MB held after prefill; its cache tensors "
                  f"{cache_bytes(tensors) / MB:.2f} MB (your formula, conv state bf16 + SSM state float32: "
                  f"{by_formula / MB:.2f} MB), prefill peak {peak / GB:6.3f} GB")
            del cache, tensors
    except NotImplementedError:
        print("finish Exercise 5 first")
    if unified_available_bytes() is not None:
        print(f"unified memory available (/proc/meminfo MemAvailable): {unified_available_bytes() / GB:.1f} GB")
    del llama_big, mamba_130m
    torch.cuda.empty_cache()

# %% markdown
# ## Wrap-up
# - Zero-order hold: $\bar A = e^{\Delta A}$, $\bar B = A^{-1}(e^{\Delta A}-I)B$; a time-invariant SSM is both a
#   recurrence and a causal convolution with kernel $C\bar A^k\bar B$.
# - Mamba makes $\Delta, B, C$ depend on the input: $\Delta=\mathrm{softplus}(\cdot)$, $\bar A=e^{\Delta A}$ with
#   $A=-e^{A_{\log}}$, $\bar B u = \Delta B u$, $y = C\cdot x + D u$, gated by $\mathrm{silu}(z)$.
# - The recurrence is associative: $\lceil\log_2 L\rceil$ parallel steps instead of $L$ sequential ones.
# - Inference memory: Llama-3-70B needs 0.33 MB of FP16 KV cache per token; a Mamba model's state is a constant
#   (computed above for Mamba-2.8B) — hybrids like Jamba and Granite 4.0 keep attention on a fraction of layers.
#
# **Read more:** Gu, Goel & Ré, *Efficiently Modeling Long Sequences with Structured State Spaces* (S4, 2022);
# Gu, Gupta, Goel & Ré, *On the Parameterization and Initialization of Diagonal State Space Models* (S4D, 2022);
# Gu & Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces* (2023), §3 and Algorithm 2;
# Dao & Gu, *Transformers are SSMs* (Mamba-2, 2024); Blelloch, *Prefix Sums and Their Applications* (1990);
# Lieber et al., *Jamba: A Hybrid Transformer-Mamba Language Model* (2024), Table 1; IBM, *IBM Granite 4.0:
# hyper-efficient, high performance hybrid models* (announcement, 2025); transformers
# `models/mamba/modeling_mamba.py` (`mamba_selective_scan`, `MambaMixer`).
