# %% markdown
# # Week 08 — Mixture of experts: routers, capacity, balancing losses, and what fits in 128 GB
#
# A **mixture-of-experts** (MoE) layer replaces a transformer's feed-forward block by many of them, the
# **experts**, and a small **router** that sends each token to only a few. The model then *holds* many more
# parameters than it *uses* per token: Mixtral-8x7B holds 46.7B and multiplies each token with about 13B of them.
# That split is exactly what a DGX Spark is good at: **128 GB** of unified memory holds a large total, while
# decoding speed is set by the bytes read per token from a memory of about **273 GB/s** — the *active* bytes.
# This is why the models people run on a Spark (gpt-oss-120b, Mixtral, Qwen-MoE, DeepSeek-style models) are MoEs.
#
# **You will learn to**
# 1. write Mixtral's router (softmax, top-k, renormalise) and see why it equals a softmax over the top-k logits;
#    meet noisy top-k gating (Shazeer et al. 2017);
# 2. write a sparse MoE layer that loads the weights of transformers' `MixtralSparseMoeBlock` and matches it;
# 3. compute expert capacity with a capacity factor and drop (and count) overflowing tokens, as Switch
#    Transformer does;
# 4. write the load-balancing loss $N\sum_i f_i P_i$ and the router z-loss, matching transformers;
# 5. add shared experts to fine-grained routed ones (DeepSeekMoE) and match transformers' DeepSeek-V2 layer;
# 6. train a tiny MoE against a dense model with the same active parameters (a demo, with a benchmark);
# 7. compute total vs active parameters, the bytes read per decoded token and the bandwidth bound for
#    Mixtral-8x7B, gpt-oss-120b (MXFP4 experts) and DeepSeek-V3 from their configs — and what fits in 128 GB.
#
# **Time:** about 3 hours. **Points:** 19, all autograded (the demos are not graded).

# %% setup id=setup
import math

import numpy as np
import torch
import torch.nn.functional as F
import transformers

import sparkcourse as sc
from sparkcourse import capacity, hub
from sparkcourse.labs import w08_moe as lab
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
transformers.logging.set_verbosity_error()
GB = 1e9
SPARK_BYTES, SPARK_BANDWIDTH = capacity.SPARK_MEMORY_BYTES, capacity.SPARK_BANDWIDTH
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FULL = profile.is_spark and DEVICE.type == "cuda"
if profile.is_spark and not FULL:
    print("spark profile without a CUDA GPU: the GPU-only cells skip")


def mixtral_block(seed=0, hidden=12, inter=7, experts=5, k=2):
    """transformers' MixtralSparseMoeBlock in float64 with random weights of a visible size (no download)."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    torch.manual_seed(seed)
    cfg = MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=experts,
                        num_experts_per_tok=k)
    block = MixtralSparseMoeBlock(cfg).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    return block


def deepseek_block(seed=0, hidden=10, inter=4, experts=8, shared=1, k=2, scale=1.0):
    """transformers' DeepseekV2Moe (greedy top-k) in float64 with random weights."""
    from transformers import DeepseekV2Config
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    torch.manual_seed(seed)
    cfg = DeepseekV2Config(hidden_size=hidden, num_attention_heads=2, moe_intermediate_size=inter,
                           n_routed_experts=experts, n_shared_experts=shared, num_experts_per_tok=k,
                           routed_scaling_factor=scale, topk_method="greedy")
    block = DeepseekV2Moe(cfg).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    return block


def noisy_top_k_gates(x, w_gate, w_noise, k, generator=None, noise=True):
    """Given: noisy top-k gating (Shazeer et al. 2017, eqs. 3-5) for tokens x (T, H) and weights (H, E):
    H(x) = x·W_g + ε·softplus(x·W_noise) with ε ~ N(0, 1) (no ε when noise=False, as at inference); keep the top
    k of H, -inf elsewhere; softmax."""
    noisy = x @ w_gate
    if noise:
        noisy = noisy + torch.randn(noisy.shape, generator=generator, dtype=x.dtype) * F.softplus(x @ w_noise)
    top, idx = noisy.topk(k, dim=-1)
    return torch.full_like(noisy, -math.inf).scatter(-1, idx, top).softmax(-1)

# %% markdown
# ## 1. The router
#
# A router is a linear map from a token's hidden state $x\in\mathbb{R}^H$ to one **logit** per expert,
# $\ell = W_r x \in \mathbb{R}^E$. Mixtral (Jiang et al. 2024, eq. 1–2) then keeps the $k$ best experts and
# weights their outputs:
# $$p = \mathrm{softmax}(\ell), \qquad \mathcal{T} = \text{top-}k(p), \qquad
# w_i = \frac{p_i}{\sum_{j\in\mathcal{T}} p_j}\;(i\in\mathcal{T}), \qquad y = \sum_{i\in\mathcal{T}} w_i\,E_i(x).$$
# The last step, **renormalisation**, makes the kept weights sum to 1. The Mixtral paper writes the same thing as
# $\mathrm{softmax}(\text{top-}k(\ell))$: a softmax over the kept *logits* only. They are equal because the
# softmax's denominator cancels: $p_i / \sum_{j\in\mathcal T} p_j = e^{\ell_i} / \sum_{j\in\mathcal T} e^{\ell_j}$.
# Not every MoE renormalises: DeepSeek-V2 (section 5) keeps the raw softmax weights; DeepSeek-V3 switched to
# sigmoid scores, renormalised over the kept experts, and balances load mainly with a per-expert bias added to
# the scores for the top-k choice (plus a very small sequence-wise auxiliary loss; DeepSeek-V3 report, §2.1.2).
#
# ### Exercise 1 (3 points)
# Write `route(logits, k)`: `logits` is `(T, E)` (one row per token); return `(weights, indices)`, both `(T, k)`,
# the chosen experts of each token in **descending order of weight** (as `torch.topk` returns them) and their
# renormalised weights.

# %% solution id=router
def route(logits, k):
    """Mixtral's router: softmax over the experts, top-k, renormalise; returns (weights, indices), (T, k) each."""
    ### BEGIN SOLUTION
    probs = torch.softmax(logits, dim=-1)
    top, idx = torch.topk(probs, k, dim=-1)
    return top / top.sum(dim=-1, keepdim=True), idx
    ### END SOLUTION

# %% tests id=test_router points=3
logits = torch.tensor([[2.0, 0.5, 1.0, -1.0, 0.0],
                       [0.0, 0.0, 3.0, 1.0, -2.0],
                       [1.0, 4.0, -1.0, 2.0, 0.5],
                       [-3.0, 0.2, 0.1, 0.0, 5.0]], dtype=torch.float64)
w, idx = route(logits, 2)
check_property(tuple(w.shape) == (4, 2) and tuple(idx.shape) == (4, 2),
               f"weights and indices should be (tokens, k) = (4, 2), got {tuple(w.shape)} and {tuple(idx.shape)} "
               "(top-k over the experts of each token: the last axis)")
check_property(idx.tolist() == [[0, 2], [2, 3], [1, 3], [4, 1]],
               f"indices {idx.tolist()}: each token's two largest logits are [[0, 2], [2, 3], [1, 3], [4, 1]] "
               "(the softmax is over the experts of one token, and it keeps their order)")
check_close(w.sum(-1), torch.ones(4, dtype=torch.float64), rtol=1e-12,
            name="the kept weights of each token must sum to 1 (renormalise after the top-k)")
check_close(w[0], [1 / (1 + math.exp(-1.0)), math.exp(-1.0) / (1 + math.exp(-1.0))], rtol=1e-12,
            name="weights of token 0 (logits 2 and 1 kept)")
### BEGIN HIDDEN TESTS
for seed, (experts, k, T) in enumerate(((6, 2, 17), (8, 1, 9), (4, 4, 5), (16, 3, 33))):
    block = mixtral_block(seed, experts=experts, k=k)
    h = torch.randn(T, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        lg, want_w, want_i = block.gate(h)
    got_w, got_i = route(lg, k)
    check_property(torch.equal(torch.as_tensor(got_i), want_i),
                   f"indices differ from transformers' MixtralTopKRouter (E={experts}, k={k})")
    # the router's softmax runs in float32 inside transformers: agreement to ~1e-7
    check_close(got_w, want_w.double(), rtol=1e-6, atol=1e-7, name=f"weights vs MixtralTopKRouter (E={experts}, k={k})")
    check_close(got_w, torch.softmax(lg.gather(1, want_i), -1), rtol=1e-10, atol=1e-12,
                name=f"weights vs a softmax over the kept logits in float64 (E={experts}, k={k})")
    check_close(route(lg + 100.0, k)[0], got_w, rtol=1e-9, atol=1e-12,
                name="weights for logits shifted by 100 (a softmax does not change)")
### END HIDDEN TESTS

# %% markdown
# **The same thing, two ways.** Renormalising the top-k of the softmax equals a softmax over the top-k logits
# (to rounding), while *not* renormalising gives weights that sum to less than 1:

# %%
try:
    lg_demo = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w_demo, i_demo = route(lg_demo, 2)
    print(f"largest |renormalised top-k - softmax(top-k logits)|: "
          f"{(w_demo - torch.softmax(lg_demo.gather(1, i_demo), -1)).abs().max().item():.1e}")
    print("sum of the kept weights without renormalisation:",
          np.round(torch.softmax(lg_demo, -1).gather(1, i_demo).sum(-1).numpy(), 3))
except NotImplementedError:
    print("finish Exercise 1 first")

# %% markdown
# **Noisy top-k gating** (Shazeer et al. 2017, *Outrageously Large Neural Networks*, eqs. 3–5) came first: it adds
# Gaussian noise with a learned, per-expert scale $\mathrm{softplus}(x W_{noise})$ to the logits *before* the top-k,
# so that near-ties are broken at random during training and experts that are rarely chosen still receive tokens
# (and gradients). The given `noisy_top_k_gates` implements it. With a router that slightly prefers two experts,
# compare how many tokens each expert receives with and without the noise:

# %%
g = torch.Generator().manual_seed(1)
x_demo = torch.randn(2000, 16, dtype=torch.float64, generator=g)
w_gate = 0.1 * torch.randn(16, 8, dtype=torch.float64, generator=g)
w_gate[:, :2] += 0.15  # experts 0 and 1 are favoured by tokens with a positive sum
w_noise = torch.zeros(16, 8, dtype=torch.float64)  # softplus(0) = log 2: noise of scale 0.69 on every logit
for name, gates in (("no noise", noisy_top_k_gates(x_demo, w_gate, w_noise, 2, noise=False)),
                    ("noisy", noisy_top_k_gates(x_demo, w_gate, w_noise, 2, generator=g))):
    counts = (gates > 0).sum(0)
    print(f"{name:9s} tokens per expert: {counts.tolist()}")

# %% markdown
# The noise flattens the load, at the price of randomness in
# routing; later MoEs (Switch, Mixtral) dropped it in favour of an auxiliary loss (section 4), and Mixtral's
# transformers implementation multiplies the *inputs* by uniform jitter instead (`router_jitter_noise`, off by
# default).

# %% markdown
# ## 2. A sparse MoE layer
#
# transformers 5.23 stores Mixtral's experts as two 3-D tensors in `MixtralSparseMoeBlock.experts`:
# `gate_up_proj` of shape `(E, 2I, H)` — for expert $e$ the first $I$ rows are the **gate** projection, the next
# $I$ the **up** projection — and `down_proj` of shape `(E, H, I)`. Expert $e$ computes the SwiGLU
# $$E_e(x) = W^{down}_e\,\big(\mathrm{silu}(W^{gate}_e x)\odot W^{up}_e x\big).$$
# The router's weight is `gate.weight`, shape `(E, H)`. The block's state dict therefore has the keys
# `gate.weight`, `experts.gate_up_proj`, `experts.down_proj`. The block returns the hidden states only; its router
# logits come from `block.gate(x)` (a tuple: logits, kept weights, indices).
#
# ### Exercise 2 (4 points)
# Write `sparse_moe(x, sd, top_k)`: `x` is `(batch, L, H)`; return the layer's output, same shape. Use your
# `route`, and compute each expert **only on the tokens routed to it** (that is the point of sparsity: a dense
# loop over all experts for all tokens gives the same numbers but not the saving). The tests compare with
# `MixtralSparseMoeBlock` in float64; transformers computes the router's softmax in float32, so agreement is
# about $10^{-6}$, not $10^{-15}$.

# %% solution id=moe_forward
def sparse_moe(x, sd, top_k):
    """Mixtral's sparse MoE layer from the block's state dict: (batch, L, H) -> (batch, L, H)."""
    ### BEGIN SOLUTION
    flat = x.reshape(-1, x.shape[-1])
    weights, idx = route(flat @ sd["gate.weight"].T, top_k)
    gate_up, down = sd["experts.gate_up_proj"], sd["experts.down_proj"]
    inter = down.shape[-1]
    out = torch.zeros_like(flat)
    for e in range(gate_up.shape[0]):
        tok, slot = torch.where(idx == e)
        if len(tok) == 0:
            continue
        h = flat[tok] @ gate_up[e].T
        y = (F.silu(h[:, :inter]) * h[:, inter:]) @ down[e].T
        out.index_add_(0, tok, weights[tok, slot, None] * y)
    return out.reshape(x.shape)
    ### END SOLUTION

# %% tests id=test_moe_forward points=4
block = mixtral_block(0)
x = torch.randn(2, 3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    got, want = sparse_moe(x, block.state_dict(), 2), block(x)
check_property(tuple(got.shape) == tuple(x.shape), f"output shape {tuple(got.shape)}, expected {tuple(x.shape)}")
check_close(got, want, rtol=1e-5, atol=1e-6, name="sparse_moe vs transformers' MixtralSparseMoeBlock")
### BEGIN HIDDEN TESTS
for seed, (experts, k, hidden, inter, shape) in enumerate(((8, 2, 12, 7, (3, 5)), (4, 1, 12, 5, (1, 9)),
                                                           (3, 3, 6, 4, (2, 2)), (16, 4, 12, 3, (1, 21)))):
    block = mixtral_block(10 + seed, hidden=hidden, inter=inter, experts=experts, k=k)
    x = torch.randn(*shape, hidden, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    sd = {name: t.clone() for name, t in block.state_dict().items()}
    with torch.no_grad():
        got = sparse_moe(x, sd, k)
        check_close(got, block(x), rtol=1e-5, atol=1e-6, name=f"sparse_moe vs MixtralSparseMoeBlock (E={experts}, k={k})")
        if shape[1] > 2:
            x2 = x.clone()
            x2[:, 1] += 1.0
            keep = [i for i in range(shape[1]) if i != 1]
            check_close(sparse_moe(x2, sd, k)[:, keep], got[:, keep], rtol=0, atol=1e-12,
                        name="outputs of the other tokens after one token changed (tokens are routed independently)")
### END HIDDEN TESTS

# %% markdown
# ## 3. Expert capacity and dropped tokens
#
# On accelerators the experts process fixed-size buffers. **Switch Transformer** (Fedus, Zoph & Shazeer 2022,
# eq. 3) sizes them with a **capacity factor**:
# $$\text{expert capacity} = \frac{\text{tokens per batch}}{\text{number of experts}} \times \text{capacity factor}.$$
# A token that arrives at a full expert **overflows**: Switch passes it on through the residual connection
# unchanged — it is *dropped* by the layer. Tokens are served in order of their position in the group (batch
# row); transformers' `SwitchTransformersTop1Router` does exactly this with a cumulative sum over each sequence.
#
# The paper's formula is not a whole number in general. We round **up**, as DeepSpeed's MoE does
# (`deepspeed/moe/sharded_moe.py`, `_capacity`: `ceil(num_tokens / num_experts * capacity_factor)`, and its
# top-2 gating doubles the factor), so that a capacity factor of 1 with perfectly balanced routing never drops a
# token. For top-$k$ routing every token occupies $k$ slots:
# $$C = \left\lceil \frac{k \cdot \text{capacity factor} \cdot T}{E} \right\rceil.$$
#
# ### Exercise 3 (4 points)
# - `expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1)`: $C$ above, a Python `int`.
# - `dispatch_top1(expert_index, num_experts, capacity)`: `expert_index` is a `(groups, T)` tensor of each
#   token's expert (top-1 routing); each group (row) has its own buffers of `capacity` slots per expert, filled
#   in token order. Return `(kept, dropped)`: `kept` a boolean tensor shaped like `expert_index` (True: the token
#   got a slot) and `dropped` the number of tokens that did not, a Python `int`. **A dropped token must be counted,
#   never silently lost**: the count is what you monitor in training.

# %% solution id=capacity
def expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1):
    """Slots per expert: ceil(top_k * capacity_factor * num_tokens / num_experts)."""
    ### BEGIN SOLUTION
    return math.ceil(top_k * capacity_factor * num_tokens / num_experts)
    ### END SOLUTION


def dispatch_top1(expert_index, num_experts, capacity):
    """Top-1 dispatch with `capacity` slots per expert and group, in token order: (kept mask, dropped count)."""
    ### BEGIN SOLUTION
    onehot = F.one_hot(expert_index, num_experts)
    arrival = (torch.cumsum(onehot, dim=-2) * onehot).sum(-1)  # 1 for the first token at its expert, 2 ...
    kept = arrival <= capacity
    return kept, int((~kept).sum())
    ### END SOLUTION

# %% tests id=test_capacity points=2
check_property(isinstance(expert_capacity(16, 4, 1.0), int), "expert_capacity must return a Python int")
check_number(expert_capacity(16, 4, 1.0), 4, name="capacity for 16 tokens, 4 experts, factor 1")
check_number(expert_capacity(10, 4, 1.0), 3, name="capacity for 10 tokens, 4 experts, factor 1 (2.5 slots: round up)")
check_number(expert_capacity(10, 4, 1.25), 4,
             name="capacity for 10 tokens, 4 experts, factor 1.25 (3.125 slots: round up)")
check_number(expert_capacity(10, 4, 1.0, top_k=2), 5, name="capacity for top-2 routing (every token takes 2 slots)")
### BEGIN HIDDEN TESTS
for args, want in (((10, 4, 1.0, 2), 5), ((1, 8, 0.5), 1), ((100, 8, 1.5), 19), ((64, 8, 2.0), 16),
                   ((7, 2, 1.0), 4), ((30, 8, 1.0, 2), 8), ((12, 3, 0.5, 4), 8)):
    check_number(expert_capacity(*args), want, name=f"expert_capacity{args} (rounded up)")
### END HIDDEN TESTS

# %% tests id=test_dispatch points=2
idx = torch.tensor([[0, 1, 0, 0, 2, 1, 0]])
kept, dropped = dispatch_top1(idx, 3, 2)
check_property(kept.tolist() == [[True, True, True, False, True, True, False]],
               f"kept {kept.tolist()}: with 2 slots, the third and fourth token for expert 0 overflow")
check_property(isinstance(dropped, int), "dropped must be a Python int (a count)")
check_number(dropped, 2, name="dropped tokens (count every token that got no slot)")
kept2, dropped2 = dispatch_top1(torch.tensor([[0, 1, 0, 0, 2, 1, 0], [2, 0, 0, 1, 2, 2, 1]]), 3, 2)
check_property(kept2[1].tolist() == [True, True, True, True, True, False, True],
               f"kept in the second group {kept2[1].tolist()}: every group (row) has its own 2 slots per expert")
check_number(dropped2, 3, name="dropped tokens over two groups")
### BEGIN HIDDEN TESTS
from transformers import SwitchTransformersConfig
from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router

for seed, (groups, T, experts, cap) in enumerate(((3, 11, 4, 2), (2, 16, 3, 5), (1, 5, 2, 1), (4, 9, 8, 1))):
    torch.manual_seed(seed)
    router = SwitchTransformersTop1Router(SwitchTransformersConfig(d_model=6, num_experts=experts,
                                                                   expert_capacity=cap)).eval()
    with torch.no_grad():
        mask, _, lg = router(torch.randn(groups, T, 6))
    kept, dropped = dispatch_top1(lg.argmax(-1), experts, cap)
    want = mask.sum(-1) > 0
    check_property(torch.equal(torch.as_tensor(kept).bool(), want),
                   f"kept differs from SwitchTransformersTop1Router (groups={groups}, T={T}, capacity={cap})")
    check_number(dropped, int((~want).sum()), name=f"dropped count (groups={groups}, T={T}, capacity={cap})")
_, none = dispatch_top1(torch.tensor([[0, 1, 2, 3]]), 4, 1)
check_number(none, 0, name="dropped when every expert gets one token and has one slot")
### END HIDDEN TESTS

# %% markdown
# **How many tokens does a capacity factor drop?** Route random tokens with a slightly unbalanced router and count
# the dropped share as the factor grows (a demo):

# %%
try:
    g = torch.Generator().manual_seed(0)
    lg_cap = torch.randn(8, 256, 8, generator=g) + torch.linspace(0, 1, 8)  # later experts slightly favoured
    top1 = lg_cap.argmax(-1)
    for cf in (0.5, 1.0, 1.25, 1.5, 2.0):
        c = expert_capacity(256, 8, cf)
        _, d = dispatch_top1(top1, 8, c)
        print(f"capacity factor {cf:4.2f}: {c:3d} slots per expert, {d:4d} of {top1.numel()} tokens dropped "
              f"({d / top1.numel():6.1%})")
except NotImplementedError:
    print("finish Exercise 3 first")

# %% markdown
# ## 4. Keeping the experts busy: the load-balancing loss and the z-loss
#
# Nothing in next-token prediction stops the router from sending most tokens to a few experts, which then learn
# faster and attract even more tokens. Switch Transformer (Fedus et al. 2022, eqs. 4–6) adds an **auxiliary
# loss** for $N$ experts over a batch of $T$ tokens:
# $$\mathcal L_{aux} = N \sum_{i=1}^{N} f_i\,P_i, \qquad f_i = \frac{1}{T}\,\#\{\text{tokens routed to } i\},
# \qquad P_i = \frac{1}{T}\sum_{t} p_i(x_t).$$
# $f_i$ is a **fraction of tokens** (not a count: a count would grow with the batch size), computed from the hard
# top-k choices and so not differentiable; the gradient flows through $P_i$, the mean router probability.
#
# For top-$k$ routing transformers' `load_balancing_loss_func` (the Mixtral file, 5.23) counts a token once for
# each of its $k$ experts and still divides by $T$, so $\sum_i f_i = k$ and perfectly balanced routing gives
# $\mathcal L_{aux} = k$ (Switch's top-1 gives 1). Write it that way. (Over several layers transformers averages
# $f$ and $P$ over all layers' tokens *before* multiplying — not the mean of the per-layer losses; here you write
# one layer.)
#
# **The router z-loss** (ST-MoE, Zoph et al. 2022, eq. 5) keeps the router's logits small, which makes the
# float32/bfloat16 softmax stable:
# $$\mathcal L_z = \frac{1}{T}\sum_{t}\Big(\log\sum_{j} e^{\ell_{tj}}\Big)^2.$$
#
# ### Exercise 4 (4 points)
# - `load_balancing_loss(router_logits, top_k)`: one layer's `(T, N)` logits; return $\mathcal L_{aux}$ as a
#   0-dim tensor that gradients flow through.
# - `router_z_loss(router_logits)`: logits of shape `(..., N)` (any leading axes); the mean over all tokens.

# %% solution id=losses
def load_balancing_loss(router_logits, top_k):
    """N * sum_i f_i * P_i, f_i: fraction of tokens with expert i in their top-k; P_i: mean router probability."""
    ### BEGIN SOLUTION
    T, n = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    chosen = torch.topk(probs, top_k, dim=-1).indices
    f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0) / T
    return n * torch.sum(f * probs.mean(0))
    ### END SOLUTION


def router_z_loss(router_logits):
    """ST-MoE z-loss: mean over tokens of logsumexp(logits)^2."""
    ### BEGIN SOLUTION
    return (torch.logsumexp(router_logits, dim=-1) ** 2).mean()
    ### END SOLUTION

# %% tests id=test_aux_loss points=3
eye = torch.eye(4, dtype=torch.float64)
balanced1 = 5 * eye  # token t prefers expert t
balanced2 = 5 * eye + 2 * eye.roll(1, dims=1)  # ... and then expert t + 1
check_close(load_balancing_loss(balanced1, 1), 1.0, rtol=1e-12, name="perfectly balanced top-1 routing (loss N·Σ f·P = 1)")
check_close(load_balancing_loss(balanced2, 2), 2.0, rtol=1e-12,
            name="perfectly balanced top-2 routing (f sums to k = 2, so the loss is 2)")
lg_aux = torch.tensor([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
check_close(load_balancing_loss(lg_aux.repeat(3, 1), 1), load_balancing_loss(lg_aux, 1), rtol=1e-12,
            name="the loss of the same tokens repeated 3 times (f is a fraction of tokens, not a count)")
### BEGIN HIDDEN TESTS
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

for T, n, k in ((13, 4, 1), (40, 8, 2), (7, 5, 3), (64, 16, 4)):
    lg = torch.randn(T, n, dtype=torch.float64, generator=torch.Generator().manual_seed(T)).requires_grad_()
    want = load_balancing_loss_func((lg,), n, k)
    got = load_balancing_loss(lg, k)
    check_property(torch.as_tensor(got).dim() == 0, "load_balancing_loss must return a 0-dim tensor")
    check_close(got.detach(), want.detach().double(), rtol=1e-6, name=f"load_balancing_loss vs transformers (T={T}, N={n}, k={k})")
    (g_got,) = torch.autograd.grad(got, lg)
    (g_want,) = torch.autograd.grad(want, lg)
    check_close(g_got, g_want.double(), rtol=1e-5, atol=1e-8,
                name=f"gradient of the loss w.r.t. the logits vs transformers (T={T}, k={k})")
p = torch.softmax(lg_aux, -1)
f = torch.tensor([3, 0, 1], dtype=torch.float64) / 4  # each token's top-1 expert: 0, 0, 2, 0
check_close(load_balancing_loss(lg_aux, 1), 3 * (f * p.mean(0)).sum(), rtol=1e-12,
            name="load_balancing_loss of a hand example (top-1)")
### END HIDDEN TESTS

# %% tests id=test_z_loss points=1
check_close(router_z_loss(torch.zeros(5, 4, dtype=torch.float64)), math.log(4) ** 2, rtol=1e-12,
            name="z-loss of all-zero logits over 4 experts: (log 4)^2")
### BEGIN HIDDEN TESTS
from transformers.models.switch_transformers.modeling_switch_transformers import router_z_loss_func

for shape, seed in (((3, 8, 6), 0), ((1, 5, 2), 1), ((2, 4, 16), 2)):
    lg = 5 * torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    check_close(router_z_loss(lg), router_z_loss_func(lg), rtol=1e-10, name=f"router_z_loss vs transformers {shape}")
    check_close(router_z_loss(lg.reshape(-1, shape[-1])), router_z_loss_func(lg), rtol=1e-10,
                name="router_z_loss of the same logits as (tokens, experts)")
check_property(torch.isfinite(router_z_loss(torch.tensor([[1000.0, 0.0]], dtype=torch.float64))).item(),
               "router_z_loss must be finite for logits of 1000 (use a stable logsumexp)")
### END HIDDEN TESTS

# %% markdown
# ## 5. Shared and fine-grained experts (DeepSeekMoE)
#
# DeepSeekMoE (Dai et al. 2024) changes two things. **Fine-grained experts**: split each expert into $m$ smaller
# ones (width $I/m$) and route each token to $mk$ of them — the same compute, many more combinations.
# **Shared experts**: a few experts that *every* token passes through, so that common knowledge is not copied into
# every routed expert. DeepSeek-V2 (and transformers' `DeepseekV2Moe` with `topk_method="greedy"`) computes
# $$y = \sum_{i\in\text{top-}k(p)} \alpha\,p_i\,E_i(x) \;+\; S(x), \qquad p = \mathrm{softmax}(W_r x),$$
# with **no renormalisation** of the kept $p_i$, a `routed_scaling_factor` $\alpha$, and the $n_s$ shared experts
# fused into one SwiGLU MLP $S$ of width $n_s \cdot I$ (the sum of $n_s$ SwiGLUs *is* one wider SwiGLU).
#
# The block's state dict has `gate.weight` `(E, H)`, `experts.gate_up_proj` `(E, 2I, H)`, `experts.down_proj`
# `(E, H, I)` (as Mixtral's) and `shared_experts.gate_proj.weight`, `shared_experts.up_proj.weight`
# (`(n_s I, H)` each), `shared_experts.down_proj.weight` (`(H, n_s I)`).
#
# ### Exercise 5 (4 points)
# Write `deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0)` for `x` of shape `(batch, L, H)`. As in
# Exercise 2, run each routed expert only on its tokens. The router of transformers runs in float32: agreement is
# about $10^{-6}$.

# %% solution id=shared_experts
def deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0):
    """DeepSeekMoE layer: routed experts (softmax top-k, no renormalisation, scaled) plus the shared experts."""
    ### BEGIN SOLUTION
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(flat @ sd["gate.weight"].T, dim=-1)
    weights, idx = torch.topk(probs, top_k, dim=-1)
    weights = weights * routed_scaling_factor
    gate_up, down = sd["experts.gate_up_proj"], sd["experts.down_proj"]
    inter = down.shape[-1]
    out = torch.zeros_like(flat)
    for e in range(gate_up.shape[0]):
        tok, slot = torch.where(idx == e)
        if len(tok) == 0:
            continue
        h = flat[tok] @ gate_up[e].T
        out.index_add_(0, tok, weights[tok, slot, None] * ((F.silu(h[:, :inter]) * h[:, inter:]) @ down[e].T))
    shared = F.silu(flat @ sd["shared_experts.gate_proj.weight"].T) * (flat @ sd["shared_experts.up_proj.weight"].T)
    out = out + shared @ sd["shared_experts.down_proj.weight"].T
    return out.reshape(x.shape)
    ### END SOLUTION

# %% tests id=test_shared_experts points=4
block = deepseek_block(0)
x = torch.randn(2, 3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    got, want = deepseek_moe(x, block.state_dict(), 2), block(x)
check_property(tuple(got.shape) == tuple(x.shape), f"output shape {tuple(got.shape)}, expected {tuple(x.shape)}")
check_close(got, want, rtol=1e-5, atol=1e-6,
            name="deepseek_moe vs transformers' DeepseekV2Moe (routed without renormalisation, plus shared)")
### BEGIN HIDDEN TESTS
for seed, (experts, shared, k, scale, shape) in enumerate(((16, 2, 3, 2.5, (2, 5)), (4, 1, 1, 1.0, (1, 7)),
                                                           (6, 3, 6, 0.5, (3, 2)))):
    block = deepseek_block(20 + seed, experts=experts, shared=shared, k=k, scale=scale)
    x = torch.randn(*shape, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        check_close(deepseek_moe(x, block.state_dict(), k, scale), block(x), rtol=1e-5, atol=1e-6,
                    name=f"deepseek_moe vs DeepseekV2Moe (E={experts}, shared={shared}, k={k}, scale={scale})")
### END HIDDEN TESTS

# %% markdown
# ## 6. A tiny MoE against a dense model with the same active parameters (demo, not graded)
#
# Does an MoE learn more per active parameter? `sparkcourse.labs.w08_moe.compare` trains, from scratch on the
# course's instruction data (the tiny LM's tokenizer), a `MixtralForCausalLM` with 8 experts of width 64 and top-2
# routing, and a **dense** model with the same attention and one FFN of width 128 — the same parameters per token
# (the routers aside). The MoE is trained with and without the load-balancing loss (your `load_balancing_loss`,
# coefficient 0.01, mean over layers), and its expert load is measured with your `route`. It skips while grading;
# here it runs a very small version (one seed, 25 steps of 8 blocks: it shows the code works, not who wins).

# %%
import matplotlib.pyplot as plt

mini = []
if sc.grading():
    print("training demo skipped while grading")
else:
    try:
        mini = lab.compare(route, load_balancing_loss, seeds=(0,), steps=25, batch=8, log=print)
    except NotImplementedError:
        print("finish Exercises 1 and 4 first")
if mini:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    for ax, r in zip(axes, [r for r in mini if r["load"] is not None], strict=True):
        for layer, row in enumerate(r["load"]):
            ax.bar(np.arange(len(row)) + 0.4 * layer, row.numpy(), width=0.4, label=f"layer {layer}")
        ax.axhline(2 / 8, color="k", ls="--", lw=1, label="balanced (k/E)")
        ax.set_title(f"{r['model']}: share of tokens per expert")
        ax.set_xlabel("expert")
        ax.legend()
    plt.show()
    for r in mini:
        print(f"{r['model']:14s} active {r['active_params']:,} of {r['total_params']:,} parameters, "
              f"eval loss {r['eval_loss']:.3f}")

# %% markdown
# **The benchmark** (`benchmarks/moe_tiny_cpu.md`: 3 seeds × 300 steps of 16 × 64 tokens, measured on a 2-vCPU
# AMD EPYC, shared, 2026-11-30), held-out next-token loss, mean ± sd over seeds:
#
# | model | total params | active params | eval loss |
# |---|---|---|---|
# | dense (one FFN of width 128) | 107,776 | 107,776 | 1.754 ± 0.016 |
# | MoE 8 × 64, top-2, no aux loss | 256,128 | 108,672 | 1.750 ± 0.010 |
# | MoE 8 × 64, top-2, aux loss 0.01 | 256,128 | 108,672 | 1.753 ± 0.011 |
#
# **Read it honestly:** at this size and on ~19K training tokens (300 steps see them about 16 times) the three are
# indistinguishable — the differences are smaller than the spread between seeds. The MoE holds 2.4× the
# parameters for the same per-token compute, and that pays off in the papers at scale and with much more data,
# not here. What the benchmark *does* show is the load: without the auxiliary loss the busiest expert took
# 0.40–0.82 of the tokens (balanced is 0.25) and in seed 0 some experts received **none** (share 0.000 — dead
# experts); with the loss the busiest took 0.41–0.57 and every expert got at least 3% of the tokens. Balancing
# did not cost loss here (1.753 vs 1.750, within noise). The histogram of every seed's expert shares, busiest first, with and without the
# loss is `benchmarks/moe_tiny_cpu.png`.

# %% markdown
# ## 7. Total vs active parameters, bytes per token, and what fits in 128 GB
#
# Decoding one token at batch 1 multiplies it with every **active** weight once, so every active byte is read
# from memory once per token. On a memory-bound device the speed limit is
# $$\text{tokens/s} \le \frac{\text{memory bandwidth}}{\text{bytes read per token}},$$
# and for an MoE the bytes read are the *active* bytes, not the total. (The input embedding is a lookup of one
# row per token, so it is not counted; the output head, which multiplies with the whole vocabulary, is.) The
# counts below come from the configs the course ships (`sparkcourse/data/configs/`), built on PyTorch's `meta`
# device — no memory, no download — and split by `lab.param_split` into routed experts and the rest.
#
# Formats: gpt-oss-120b is published with its experts in **MXFP4** (4.25 bits per weight with the shared scales,
# week 00) and the rest in bf16; Mixtral and DeepSeek-V3 are shown at bf16 and with everything at NVFP4 (4.5 bits).

# %%
rows = {}
for model_id in ("mistralai/Mixtral-8x7B-v0.1", "openai/gpt-oss-120b", "deepseek-ai/DeepSeek-V3"):
    rows[model_id] = lab.param_split(lab.meta_model(hub.shipped_config(model_id)))


def weight_and_read_bytes(split, expert_fmt, other_fmt):
    """(bytes of all weights, bytes read per decoded token) with experts and the rest in the given formats."""
    share = (split["active"] - split["other"]) / split["experts"]
    e, o = capacity.bytes_per_param(expert_fmt), capacity.bytes_per_param(other_fmt)
    total = split["experts"] * e + (split["other"] + split["embed"]) * o
    return total, split["experts"] * share * e + split["other"] * o


plans = [("mistralai/Mixtral-8x7B-v0.1", "bf16", "bf16"), ("mistralai/Mixtral-8x7B-v0.1", "nvfp4", "nvfp4"),
         ("openai/gpt-oss-120b", "mxfp4", "bf16"), ("deepseek-ai/DeepSeek-V3", "bf16", "bf16"),
         ("deepseek-ai/DeepSeek-V3", "nvfp4", "nvfp4")]
print(f"{'model':30s} {'total':>8s} {'active':>7s} {'experts/other':>14s} {'weights':>9s} {'fits?':>5s} "
      f"{'read/token':>10s} {'bound at 273 GB/s':>18s}")
for model_id, ef, of in plans:
    s = rows[model_id]
    total_b, read_b = weight_and_read_bytes(s, ef, of)
    print(f"{model_id.split('/')[1]:30s} {s['total'] / 1e9:7.1f}B {s['active'] / 1e9:6.2f}B "
          f"{ef + '/' + of:>14s} {total_b / GB:7.1f}GB {'yes' if total_b < SPARK_BYTES else 'no':>5s} "
          f"{read_b / GB:8.2f}GB {capacity.decode_tokens_per_s_ceiling(read_b):13.1f} tok/s")

# Why bandwidth and not compute: a decoded token does 2 FLOPs (multiply, add) per active weight it reads.
spark_fp4_flops = 1e15  # NVIDIA's DGX Spark figure: 1 PFLOP of FP4 (with sparsity)
for fmt in ("bf16", "nvfp4"):
    print(f"batch-1 decode in {fmt}: {2 / capacity.bytes_per_param(fmt):.1f} FLOP per byte read; the Spark would need "
          f"{spark_fp4_flops / SPARK_BANDWIDTH:,.0f} FLOP per byte to be compute-bound at its FP4 peak")
# Batching: B sequences share one read of the attention weights, but each token picks its own experts. With
# uniform, independent routing a layer reads E·(1 - (1 - k/E)^B) distinct experts per step.
for name, E, k in (("Mixtral-8x7B", 8, 2), ("gpt-oss-120b", 128, 4)):
    hit = {B: E * (1 - (1 - k / E) ** B) for B in (1, 4, 16, 64)}
    print(f"{name}: distinct experts read per layer and step at batch " +
          ", ".join(f"{B}: {h:.1f} of {E}" for B, h in hit.items()))

# %% markdown
# **Check against the publishers.** OpenAI's gpt-oss model card (August 2025) gives gpt-oss-120b 116.83B total
# and 5.13B active parameters and a checkpoint of 60.8 GiB; Mistral AI's Mixtral announcement (December 2023)
# says 46.7B total, 12.9B used per token; DeepSeek-V3's report (December 2024) says 671B total, 37B activated.
# Compare with the table: 5.13B active for gpt-oss-120b is what you get *without* the input embedding (OpenAI
# counts it that way), while Mistral's 12.9B includes it (12.75B + the 0.13B of `rows[...]["embed"]`); DeepSeek's
# rounded 37B fits either way (36.6B without, 37.6B with). These are publishers' figures; the arithmetic above is
# the part you can check.
#
# **What it means on a Spark.** Mixtral-8x7B in bf16 (93 GB) fits in 128 GB with little room for the KV cache
# and the system, and decodes at most ~11 tokens/s; at 4 bits it is a quarter of the size and the bound rises
# about fourfold. A decode step does about 2 FLOPs per byte it reads, against the thousands per byte the GB10
# could compute: it waits on memory, which is why the *bytes read* set the speed. gpt-oss-120b (about 65 GB) fits
# with room to spare, and its bound is set by ~5B active
# parameters — the reason it is the showcase model for a Spark. DeepSeek-V3 does not fit even at 4 bits: its
# *total* is the problem, however small its active share (it needs several machines, e.g. two Sparks hold 256 GB
# — still not enough at NVFP4). A bound is not a measurement: real engines reach a fraction of it (attention and
# KV-cache reads, kernel launches, dequantisation). Batching amortises a dense model's weight reads over all the
# sequences; an MoE's expert reads only as far as the tokens share experts: the last lines above show Mixtral
# reading nearly all 8 experts of a layer by batch 16, while gpt-oss-120b reads about 51 of its 128 there — so
# its bytes per step keep growing with the batch long after a dense model's have stopped.

# %% markdown
# ## On your Spark
# This cell measures decode speed against the bound on the GPU at hand. With `SPARKCOURSE_STANDIN=1` it builds a
# **stand-in**: Mixtral-8x7B's architecture from the shipped config with random weights in bf16, **layer-reduced**
# to fit 16 GB (the label says how many layers) — speed depends on the bytes read, not on the weights' values.
# Without it, it loads `mistralai/Mixtral-8x7B-v0.1` (93 GB in bf16: it fits a Spark's 128 GB, nothing else does
# at the same time). It decodes 64 tokens greedily at batch 1, one forward per token with the KV cache, times each
# step with CUDA events, and compares the median against **the card's measured copy bandwidth** (a large
# device-to-device copy, read and write counted: an achievable figure, below the spec sheet's) divided by the
# model's bytes read per token. On a non-Spark GPU the numbers are that card's, not a Spark's. Peak memory:
# `torch.cuda.max_memory_allocated`. About a minute on a data-centre GPU with the stand-in.
#
# Expect a small share of the bound: at batch 1 transformers' eager MoE path runs a Python loop over the experts
# a token hits, each a few small kernels, so launch overhead rather than bandwidth sets the pace. Serving engines
# (vLLM, SGLang, TensorRT-LLM, llama.cpp) use fused MoE kernels and CUDA graphs to get much closer; the bound is
# what none of them can beat.

# %%
if not FULL:
    print("needs the spark profile and a CUDA GPU: skipped here (run it on a DGX Spark or any CUDA machine)")
else:
    from sparkcourse import gpu

    try:
        model, _, label = hub.causal_lm("mistralai/Mixtral-8x7B-v0.1", dtype=torch.bfloat16, device="cuda",
                                        max_bytes=16e9)
    except hub.Unavailable as exc:
        hub.report(exc)
    else:
        print(label)
        bandwidth = gpu.copy_bandwidth()
        r = lab.against_bound(model, bandwidth, prompt_len=128, new_tokens=64)
        print(f"{torch.cuda.get_device_name()}: copy bandwidth measured {bandwidth / 1e9:.0f} GB/s")
        print(f"active parameters {r['split']['active'] / 1e9:.2f}B of {r['split']['total'] / 1e9:.2f}B -> "
              f"{r['read_bytes'] / GB:.2f} GB read per token; bound {r['bound']:.0f} tokens/s on this card, "
              f"{r['spark_bound']:.1f} tokens/s at a Spark's 273 GB/s")
        print(f"measured: {r['tokens_per_s']:.1f} tokens/s (median of {len(r['step_s'])} steps, CUDA events) "
              f"= {r['share_of_bound']:.0%} of this card's bound; peak allocated {r['peak_bytes'] / GB:.1f} GB")
        del model
        torch.cuda.empty_cache()

# %% markdown
# ## Wrap-up
# - Mixtral's router: softmax, top-k, renormalise — the same as a softmax over the kept logits. DeepSeek-V2 does
#   not renormalise; it scales and adds shared experts.
# - A sparse layer computes each expert on its own tokens only; that is where the saving comes from.
# - Capacity $C=\lceil k\cdot cf\cdot T/E\rceil$; overflowing tokens skip the layer and must be counted.
# - $\mathcal L_{aux}=N\sum_i f_iP_i$ on *fractions* of tokens (transformers: $\sum f_i = k$); the z-loss
#   $\overline{(\log\sum e^{\ell})^2}$ keeps logits small.
# - Decode speed is bounded by bandwidth over *active* bytes; what fits is set by *total* bytes.
#
# **Read more:** Shazeer et al., *Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
# Layer* (2017); Fedus, Zoph & Shazeer, *Switch Transformers* (JMLR 2022), §2.1–2.2; Zoph et al., *ST-MoE:
# Designing Stable and Transferable Sparse Expert Models* (2022), §3; Jiang et al., *Mixtral of Experts* (2024);
# Dai et al., *DeepSeekMoE* (2024); DeepSeek-AI, *DeepSeek-V2* (2024) and *DeepSeek-V3 Technical Report* (2024);
# OpenAI, *gpt-oss-120b & gpt-oss-20b Model Card* (2025); transformers `models/mixtral/modeling_mixtral.py`,
# `models/deepseek_v2/modeling_deepseek_v2.py`, `models/switch_transformers/modeling_switch_transformers.py`;
# DeepSpeed `deepspeed/moe/sharded_moe.py`.
