# %% markdown
# # Week 00 — Meet your DGX Spark: memory, precision, capacity
#
# A DGX Spark puts **128 GB of unified memory** (LPDDR5x, shared by the Grace CPU and the Blackwell GPU,
# about **273 GB/s**) on a desk. That single number decides which models you can run, at which precision,
# with how much context, and what you can fine-tune. This week you build the planner that answers those
# questions — and use it to audit a capacity table that circulates online.
#
# **You will learn to**
# 1. count the bytes per parameter of FP32, BF16, FP8, NVFP4, MXFP4, INT4 and NF4, block scales included;
# 2. count the parameters of real models from their configs (dense and mixture-of-experts);
# 3. size the KV cache per token (GQA vs MHA) and find the longest context that fits;
# 4. estimate training memory for full fine-tuning, LoRA and QLoRA;
# 5. check a circulating "what fits on a Spark" table and say which entries are wrong and why.
#
# **Time:** about 90 minutes. **Points:** 17, all autograded.
#
# Spec-sheet figures used here (NVIDIA DGX Spark product page): 128 GB unified LPDDR5x, 273 GB/s,
# 1 PFLOP FP4 (with sparsity). Every other number in this notebook is computed in a cell.

# %% setup id=setup
import math  # noqa: F401 (for your answers)

import sparkcourse as sc
from sparkcourse import capacity
from sparkcourse.testing import check_number, check_property

profile = sc.setup()
GB, MB = 1e9, 1e6
SPARK_BYTES = capacity.SPARK_MEMORY_BYTES
SPARK_BW = capacity.SPARK_BANDWIDTH
CONFIGS = capacity.CONFIGS
print("models:", ", ".join(CONFIGS))

# %% markdown
# ## 1. Bytes per parameter
#
# A low-precision format stores each value in a few bits **plus scales** that say what those bits mean.
# The scales are the part people forget:
#
# | format | element | scale | block |
# |---|---|---|---|
# | FP32, FP16/BF16, FP8, INT8 | 32, 16, 8, 8 bits | — | — |
# | **NVFP4** (Blackwell) | E2M1, 4 bits | one FP8 E4M3 per block (plus one FP32 per tensor) | 16 |
# | **MXFP4** (OCP Microscaling) | E2M1, 4 bits | one E8M0 (8 bits, a power of two) per block | 32 |
# | **INT4** (GPTQ/AWQ style) | 4-bit integer | one FP16 per group | `group_size` (default 128) |
# | **NF4** (QLoRA) with double quantisation | 4-bit NormalFloat | one FP8 absmax per block of 64 values, and one FP32 per 256 of those absmaxes (they are quantised too) | 64 |
#
# The bits per element are the element's bits plus its share of every scale that covers it: derive each row's
# formula from the table. The per-tensor FP32 of NVFP4 is amortised over millions of values: ignore it.
# `group_size`, where given, replaces the block size of NVFP4, MXFP4, INT4 and NF4.
# Bits are not bytes: `weight_bytes` must divide by 8.

# %% markdown
# ### Exercise 1 (4 points)
# Write `bits_per_param(fmt, group_size=None)` for the formats `"fp32", "fp16", "bf16", "fp8", "int8",
# "nvfp4", "mxfp4", "int4", "nf4"` (lower case; NF4 always with double quantisation) — raise `ValueError`
# for anything else — and `weight_bytes(n_params, fmt, group_size=None)`, the bytes to store `n_params` weights.
# Implement them yourself: the hidden tests check that your functions do not call `sparkcourse.capacity`.

# %% solution id=bits_per_param
def bits_per_param(fmt, group_size=None):
    """Stored bits per parameter of `fmt`, block-scale overhead included."""
    ### BEGIN SOLUTION
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
    ### END SOLUTION


def weight_bytes(n_params, fmt, group_size=None):
    """Bytes needed to store `n_params` weights in `fmt`."""
    ### BEGIN SOLUTION
    return n_params * bits_per_param(fmt, group_size) / 8
    ### END SOLUTION

# %% tests id=test_bits_per_param points=3
check_number(bits_per_param("bf16"), 16, name='bits_per_param("bf16")')
check_number(bits_per_param("fp8"), 8, name='bits_per_param("fp8")')
check_number(bits_per_param("nvfp4"), 4.5, name='bits_per_param("nvfp4") (did you add the block scales?)')
try:
    bits_per_param("fp5")
    raise AssertionError('bits_per_param("fp5") should raise ValueError')
except ValueError:
    pass
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(bits_per_param, "sparkcourse.capacity"),
               "bits_per_param calls sparkcourse.capacity: implement it yourself")
for fmt in ("fp32", "fp16", "bf16", "fp8", "int8", "nvfp4", "mxfp4", "int4", "nf4"):
    check_number(bits_per_param(fmt), ref.bits_per_param(fmt), rtol=1e-9, name=f"bits_per_param({fmt!r})")
for fmt, g in (("int4", 32), ("int4", 64), ("nvfp4", 32), ("mxfp4", 16), ("nf4", 128)):
    check_number(bits_per_param(fmt, g), ref.bits_per_param(fmt, g), rtol=1e-9,
                 name=f"bits_per_param({fmt!r}, group_size={g})")
### END HIDDEN TESTS

# %% tests id=test_weight_bytes points=1
check_number(weight_bytes(1_000, "bf16"), 2_000, name='weight_bytes(1000, "bf16") (bytes, not bits)')
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(weight_bytes, "sparkcourse.capacity"), "weight_bytes calls sparkcourse.capacity")

for n, fmt in ((70e9, "nvfp4"), (8_030_261_248, "fp8"), (123_457, "nf4"), (1, "fp32"), (46.7e9, "int4")):
    check_number(weight_bytes(n, fmt), ref.weight_bytes(n, fmt), rtol=1e-9, name=f"weight_bytes({n}, {fmt!r})")
check_number(weight_bytes(1e6, "int4", 32), ref.weight_bytes(1e6, "int4", 32), rtol=1e-9,
             name='weight_bytes(1e6, "int4", 32)')
### END HIDDEN TESTS

# %% markdown
# How much does NVFP4's block scale cost on a 70-billion-parameter model, and how does that compare with
# the "4 bits per weight" people quote?

# %%
for fmt in ("bf16", "fp8", "nvfp4", "mxfp4", "int4", "nf4"):
    print(f"{fmt:6s} {capacity.bits_per_param(fmt):7.3f} bits  70e9 params -> "
          f"{capacity.weight_bytes(70e9, fmt) / GB:6.1f} GB")
print(f"'4 bits' with no scales: {70e9 * 4 / 8 / GB:.1f} GB")

# %% markdown
# ## 2. Parameters from a config
#
# A Llama-style decoder layer has attention with $h_q$ query heads and $h_{kv}$ key/value heads of size
# $d_h$ (`head_dim`, default `hidden_size // num_attention_heads`), and a SwiGLU MLP with three matrices:
#
# - attention: $W_q: d \times h_q d_h$, $W_k, W_v: d \times h_{kv} d_h$, $W_o: h_q d_h \times d$ (no biases);
# - MLP: gate and up $d \times d_{ff}$, down $d_{ff} \times d$;
# - two RMSNorm weight vectors of size $d$ per layer, one final norm;
# - the embedding $V \times d$ and the output head $V \times d$ — the same matrix when `tie_word_embeddings` is true.
#
# A **mixture of experts** (Mixtral) replaces the MLP by `num_local_experts` SwiGLU experts and a router
# $d \times E$; each token uses `num_experts_per_tok` experts. *Total* parameters must be stored; *active*
# ones are read for each token — and on a Spark, reading is what sets the speed.

# %% markdown
# ### Exercise 2 (4 points)
# Write `dense_params(cfg)` for a Llama-style config dict and `moe_params(cfg)` returning `(total, active)`
# for a Mixtral-style one. The keys are those of `CONFIGS` above; `head_dim` may be present.

# %% solution id=param_counts
def dense_params(cfg):
    """Parameters of a Llama-style dense decoder."""
    ### BEGIN SOLUTION
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    mlp = 3 * d * cfg["intermediate_size"]
    emb = V * d * (1 if cfg.get("tie_word_embeddings") else 2)
    return emb + L * (attn + mlp + 2 * d) + d
    ### END SOLUTION


def moe_params(cfg):
    """(total, active) parameters of a Mixtral-style mixture of experts."""
    ### BEGIN SOLUTION
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    expert = 3 * d * cfg["intermediate_size"]
    without_mlp = dense_params({**cfg, "intermediate_size": 0}) + L * d * E
    return without_mlp + L * E * expert, without_mlp + L * k * expert
    ### END SOLUTION

# %% tests id=test_dense_params points=2
llama8b = CONFIGS["meta-llama/Meta-Llama-3-8B"]
n8 = dense_params(llama8b)
check_property(7.9e9 < n8 < 8.1e9, f"Llama-3-8B should have about 8.0e9 parameters, got {n8:.4g}")
### BEGIN HIDDEN TESTS
import random

from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(dense_params, "sparkcourse.capacity"), "dense_params calls sparkcourse.capacity")
for name in ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B"):
    check_number(dense_params(CONFIGS[name]), ref.dense_params(CONFIGS[name]), rtol=0, name=f"dense_params({name})")
rng = random.Random(0)
for trial in range(6):
    heads = rng.choice([3, 4, 6, 8])
    cfg = dict(vocab_size=rng.randint(50, 999), hidden_size=heads * rng.choice([5, 8, 16]),
               intermediate_size=rng.randint(7, 300), num_hidden_layers=rng.randint(1, 5),
               num_attention_heads=heads, num_key_value_heads=rng.choice([1, heads]),
               tie_word_embeddings=bool(trial % 2))
    if trial >= 4:
        cfg["head_dim"] = rng.choice([3, 7])
    check_number(dense_params(cfg), ref.dense_params(cfg), rtol=0, name=f"dense_params({cfg})")
### END HIDDEN TESTS

# %% tests id=test_moe_params points=2
total, active = moe_params(CONFIGS["mistralai/Mixtral-8x7B-v0.1"])
check_property(total > active, "total parameters must exceed active ones for a mixture of experts")
check_property(45e9 < total < 48e9, f"Mixtral-8x7B has about 46.7e9 parameters in total, got {total:.4g}")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(moe_params, "sparkcourse.capacity"), "moe_params calls sparkcourse.capacity")
got, want = moe_params(CONFIGS["mistralai/Mixtral-8x7B-v0.1"]), ref.moe_params(CONFIGS["mistralai/Mixtral-8x7B-v0.1"])
check_number(got[0], want[0], rtol=0, name="Mixtral total")
check_number(got[1], want[1], rtol=0, name="Mixtral active")
for E, k, tie in ((4, 1, False), (16, 4, True), (5, 2, False)):
    cfg = dict(vocab_size=301, hidden_size=24, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, tie_word_embeddings=tie, num_local_experts=E, num_experts_per_tok=k)
    got, want = moe_params(cfg), ref.moe_params(cfg)
    check_number(got[0], want[0], rtol=0, name=f"total with {E} experts")
    check_number(got[1], want[1], rtol=0, name=f"active with {E} experts, top-{k}")
### END HIDDEN TESTS

# %% markdown
# The course planner `sparkcourse.capacity.param_count` does the same for DeepSeek-V3, whose attention
# (multi-head latent attention) compresses keys and values into a 512-wide latent. Its total and active
# counts, and the weight memory at each precision:

# %%
for name, cfg in CONFIGS.items():
    count = capacity.param_count(cfg)
    row = "  ".join(f"{fmt} {capacity.weight_bytes(count.total, fmt) / GB:7.1f}" for fmt in ("bf16", "fp8", "nvfp4"))
    print(f"{name:30s} total {count.total / 1e9:7.2f}B  active {count.active / 1e9:6.2f}B  GB: {row}")

# %% markdown
# DeepSeek-V3 does not fit in 128 GB even at NVFP4 — but its *active* weights for one token are only a few
# percent of the total. That distinction decides speed: batch-1 decoding reads every active weight once per
# token, so **memory bandwidth / bytes read per token** is an upper bound on tokens per second. Count the bytes
# read carefully: of the input embedding only one row (the token's) is read, while the output head is read
# whole to produce the logits; and the token also reads the **KV cache** of every earlier token (Section 3),
# which grows with the context. The bound assumes perfect use of the 273 GB/s and no other cost: real decoding
# is slower. (`capacity.decode_tokens_per_s_ceiling` takes the bytes read; below they are counted here.)

# %%
def bytes_read_per_token(cfg, fmt, context=0, kv_bytes=2.0):
    """Active weights minus the input embedding (one row read; untied models), plus the KV cache of `context`."""
    active = capacity.param_count(cfg).active
    emb = 0 if cfg.get("tie_word_embeddings") else cfg["vocab_size"] * cfg["hidden_size"]
    return capacity.weight_bytes(active - emb, fmt) + context * capacity.kv_bytes_per_token(cfg, kv_bytes)


for name in ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B", "mistralai/Mixtral-8x7B-v0.1"):
    cfg = CONFIGS[name]
    for fmt in ("bf16", "nvfp4"):
        crude = capacity.decode_tokens_per_s_ceiling(capacity.weight_bytes(capacity.param_count(cfg).active, fmt))
        ceilings = [capacity.decode_tokens_per_s_ceiling(bytes_read_per_token(cfg, fmt, c))
                    for c in (0, cfg["max_position_embeddings"])]
        print(f"{name:30s} {fmt:6s} all active weights: {crude:6.1f} tok/s; corrected: {ceilings[0]:6.1f} tok/s "
              f"at the first token, {ceilings[1]:6.1f} at {cfg['max_position_embeddings']:,} tokens (FP16 cache)")

# %% markdown
# ### Compute: prefill is compute-bound, decode is bandwidth-bound (not graded)
# A forward pass costs about **2 FLOPs per active parameter per token** (one multiply and one add per weight);
# training costs about **6·N·D** FLOPs for N parameters and D tokens (forward 2ND, backward 4ND: Kaplan et al.,
# *Scaling Laws for Neural Language Models*, 2020). Whether a step is limited by compute or by memory depends on
# its **arithmetic intensity**, FLOPs per byte read. Decoding one token with NVFP4 weights does 2 FLOPs per
# 0.5625 bytes of weight: about 3.6 FLOP/byte, times the batch. Prefill of P prompt tokens reuses every weight P
# times. The **roofline**: attainable FLOP/s = min(peak, intensity × bandwidth); the ridge point peak/bandwidth
# is where a step turns compute-bound.
#
# The Spark's figures (NVIDIA DGX Spark product page): 273 GB/s, and "up to 1 PFLOP" of FP4 **with sparsity**.
# NVIDIA quotes sparse figures for 2:4 structured sparsity at twice the dense rate, so dense FP4 is about
# 0.5 PFLOP/s; NVIDIA lists no FP8 figure for the Spark, and the FP8 line below assumes half the FP4 rate, as on
# other Blackwell GPUs — an assumption, not a spec.

# %%
SPARK_FP4_DENSE = 1e15 / 2  # "1 PFLOP FP4" is with 2:4 sparsity
SPARK_FP8_DENSE = SPARK_FP4_DENSE / 2  # assumption: half the FP4 rate (no NVIDIA figure for the Spark)
ridge = SPARK_FP4_DENSE / SPARK_BW
print(f"ridge point: {ridge:,.0f} FLOP/byte (FP4 dense), {SPARK_FP8_DENSE / SPARK_BW:,.0f} FLOP/byte (FP8)")
n70 = capacity.param_count(CONFIGS["meta-llama/Meta-Llama-3-70B"]).total
w70 = capacity.weight_bytes(n70, "nvfp4")
for tokens in (1, 16, 512, 4096):
    intensity = 2 * n70 * tokens / w70  # weight bytes are read once for all the tokens of the step
    attainable = min(SPARK_FP4_DENSE, intensity * SPARK_BW)
    t = 2 * n70 * tokens / attainable
    bound = "compute" if intensity > ridge else "bandwidth"
    print(f"Llama-3-70B NVFP4, {tokens:5d} tokens per step: {intensity:8.1f} FLOP/byte -> {bound}-bound, "
          f">= {t * 1e3:8.1f} ms per step")
print(f"training 8B parameters on 1e9 tokens: 6ND = {6 * 8e9 * 1e9:.1e} FLOPs, "
      f">= {6 * 8e9 * 1e9 / SPARK_FP8_DENSE / 3600:.0f} hours at the assumed FP8 peak (real runs reach far less)")

# %%
import matplotlib.pyplot as plt

xs = [2.0**k for k in range(-2, 15)]
fig, ax = plt.subplots(figsize=(6, 3.5))
for peak, label in ((SPARK_FP4_DENSE, "FP4 dense (spec / 2)"), (SPARK_FP8_DENSE, "FP8 (assumed FP4 / 2)")):
    ax.plot(xs, [min(peak, x * SPARK_BW) / 1e12 for x in xs], label=label)
for tokens, marker in ((1, "o"), (4096, "s")):
    x = 2 * n70 * tokens / w70
    ax.scatter([x], [min(SPARK_FP4_DENSE, x * SPARK_BW) / 1e12], marker=marker,
               label=f"Llama-3-70B NVFP4, {tokens} token(s) per step")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("arithmetic intensity (FLOP/byte)")
ax.set_ylabel("attainable TFLOP/s")
ax.set_title("Roofline of a DGX Spark (spec figures, computed)")
ax.legend(fontsize=7)
plt.show()

# %% markdown
# ## 3. The KV cache
#
# Generating token $t$ attends to the keys and values of all earlier tokens, so every layer keeps **K and V**
# for each token: $2 \times L \times h_{kv} \times d_h$ values per token. Grouped-query attention (GQA) shares
# each K/V head between several query heads: Llama-3-70B has 64 query heads but only 8 KV heads.
#
# ### Exercise 3 (4 points)
# Write `kv_bytes_per_token(cfg, bytes_per_value=2.0)` and `max_context(budget_bytes, cfg, weight_fmt="bf16",
# kv_bytes_per_value=2.0, batch=1)`: the longest context (an `int`, tokens per sequence, rounded down, 0 if the
# weights alone do not fit) such that the weights (`dense_params` in `weight_fmt`) plus the KV cache of `batch`
# sequences fit into `budget_bytes`.

# %% solution id=kv_cache
def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    """KV-cache bytes per token: K and V, all layers, KV heads × head dim."""
    ### BEGIN SOLUTION
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * bytes_per_value
    ### END SOLUTION


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    """Longest context whose weights plus KV cache for `batch` sequences fit in `budget_bytes`."""
    ### BEGIN SOLUTION
    free = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    if free <= 0:
        return 0
    return int(free // (kv_bytes_per_token(cfg, kv_bytes_per_value) * batch))
    ### END SOLUTION

# %% tests id=test_kv_bytes points=2
llama70b = CONFIGS["meta-llama/Meta-Llama-3-70B"]
per_token = kv_bytes_per_token(llama70b, 2.0)
check_property(abs(per_token / MB - 0.33) < 0.01,
               f"Llama-3-70B at FP16 needs about 0.33 MB of KV cache per token, got {per_token / MB:.4g} MB")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(kv_bytes_per_token, "sparkcourse.capacity"), "kv_bytes_per_token calls sparkcourse.capacity")

for name, cfg in CONFIGS.items():
    if cfg["model_type"] in ("llama", "mixtral"):
        for b in (1.0, 2.0, 0.5):
            check_number(kv_bytes_per_token(cfg, b), ref.kv_bytes_per_token(cfg, b), rtol=1e-9,
                         name=f"kv_bytes_per_token({name}, {b})")
odd = dict(vocab_size=99, hidden_size=40, intermediate_size=50, num_hidden_layers=3, num_attention_heads=5,
           num_key_value_heads=1, head_dim=12, tie_word_embeddings=True)
check_number(kv_bytes_per_token(odd, 4.0), ref.kv_bytes_per_token(odd, 4.0), rtol=1e-9,
             name="kv_bytes_per_token with head_dim set and one KV head")
### END HIDDEN TESTS

# %% tests id=test_max_context points=2
ctx = max_context(SPARK_BYTES, llama70b, "nvfp4", 1.0)
check_property(isinstance(ctx, int), f"max_context should return an int, got {type(ctx).__name__}")
check_property(ctx > 100_000, f"Llama-3-70B at NVFP4 with an FP8 cache should fit > 100k tokens in 128 GB, got {ctx}")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(max_context, "sparkcourse.capacity"), "max_context calls sparkcourse.capacity")

for budget, name, fmt, kvb, batch in ((SPARK_BYTES, "meta-llama/Meta-Llama-3-70B", "fp8", 2.0, 1),
                                      (SPARK_BYTES, "meta-llama/Meta-Llama-3-70B", "nvfp4", 1.0, 8),
                                      (100e9, "meta-llama/Meta-Llama-3-8B", "bf16", 2.0, 3),
                                      (64e9, "meta-llama/Meta-Llama-3-70B", "bf16", 2.0, 1)):
    want = ref.max_context(budget, CONFIGS[name], fmt, kvb, batch)
    check_number(max_context(budget, CONFIGS[name], fmt, kvb, batch), want, rtol=0, atol=0,
                 name=f"max_context({budget:g}, {name}, {fmt}, {kvb}, batch={batch})")
### END HIDDEN TESTS

# %% markdown
# KV cache per token of each model at FP16 and FP8 (DeepSeek-V3's multi-head latent attention caches a
# 512-wide latent plus a 64-wide RoPE key per layer instead of full keys and values):

# %%
for name, cfg in CONFIGS.items():
    values = capacity.kv_bytes_per_token(cfg, 1)
    print(f"{name:30s} {values:9,.0f} values/token  FP16 {capacity.kv_bytes_per_token(cfg, 2) / MB:.3f} MB"
          f"  FP8 {capacity.kv_bytes_per_token(cfg, 1) / MB:.3f} MB")

# %% markdown
# `max_context` answers a memory question only. Two things cut the answer down in practice:
#
# - the model's **trained context** (`max_position_embeddings` in its config): Llama-3-70B was trained for
#   8,192 tokens, Llama-3.1 for 131,072 (its config ships with the course in `sparkcourse/data/configs/`);
#   memory beyond that holds a cache the model cannot use well;
# - a **reserve** for what else lives in the same 128 GB: the OS and your programs, the CUDA context, and the
#   activations and workspace of the forward pass. Below it is an assumed 10 GB; the last cell of this notebook
#   measures what your Spark really has free.
#
# `capacity.usable_context` applies both:

# %%
RESERVE = 10 * GB  # an assumption for the OS, the CUDA context and activations: measure yours below
cfg70 = CONFIGS["meta-llama/Meta-Llama-3-70B"]
llama31 = capacity.CONFIGS["meta-llama/Meta-Llama-3-70B"] | {"max_position_embeddings": 131072}  # same architecture
for label, cfg in (("Llama-3-70B (trained for 8,192)", cfg70), ("Llama-3.1-70B (trained for 131,072)", llama31)):
    mem = capacity.max_context(SPARK_BYTES, cfg, "nvfp4", 1.0)
    usable = capacity.usable_context(SPARK_BYTES, cfg, "nvfp4", 1.0, reserve_bytes=RESERVE)
    print(f"{label:38s} NVFP4 + FP8 cache: memory allows {mem:,} tokens, usable {usable:,}")

# %% markdown
# Memory against context length for Llama-3-70B, per precision of weights and cache, with the Spark's 128 GB,
# up to Llama-3.1's trained 131,072 tokens (Llama-3's 8,192 marked):

# %%
import matplotlib.pyplot as plt

n70 = capacity.param_count(cfg70).total
contexts = [2**k for k in range(10, 18)]
fig, ax = plt.subplots(figsize=(7, 4))
for wfmt, kvb, label in (("bf16", 2, "BF16 weights, FP16 cache"), ("fp8", 2, "FP8 weights, FP16 cache"),
                         ("fp8", 1, "FP8 weights, FP8 cache"), ("nvfp4", 1, "NVFP4 weights, FP8 cache")):
    totals = [(capacity.weight_bytes(n70, wfmt) + c * capacity.kv_bytes_per_token(cfg70, kvb)) / GB
              for c in contexts]
    ax.plot(contexts, totals, marker="o", label=label)
ax.axhline(SPARK_BYTES / GB, color="k", ls="--", label="DGX Spark, 128 GB")
ax.axhline((SPARK_BYTES - RESERVE) / GB, color="grey", ls=":", label="128 GB minus a 10 GB reserve")
ax.axvline(8192, color="r", ls=":", label="Llama-3's trained context")
ax.set_xscale("log", base=2)
ax.set_xlabel("context length (tokens, batch 1)")
ax.set_ylabel("weights + KV cache (GB)")
ax.set_title("Llama-3-70B on a DGX Spark (computed)")
ax.legend(fontsize=8)
plt.show()

# %% markdown
# ## 4. Training memory
#
# Training keeps more than the weights. With AdamW in mixed precision, each trained parameter costs
# BF16 weight (2 bytes) + BF16 gradient (2) + FP32 master weight (4) + Adam's two FP32 moments (4 + 4)
# = **16 bytes**, *before* activations (which grow with batch × sequence length).
#
# - **LoRA** freezes the base (BF16, 2 bytes per parameter, no gradient or optimiser state) and trains small
#   adapters at 16 bytes per adapter parameter.
# - **QLoRA** stores the frozen base in NF4 with double quantisation (your `bits_per_param("nf4") / 8` bytes)
#   plus the same adapters.
#
# ### Exercise 4 (2 points)
# Write `training_bytes(n_params, method="full", adapter_params=0)` for `method` in `"full", "lora", "qlora"`
# (raise `ValueError` otherwise). For `"full"`, `adapter_params` is ignored.

# %% solution id=training
def training_bytes(n_params, method="full", adapter_params=0):
    """Weights + gradients + AdamW state in bytes, before activations."""
    ### BEGIN SOLUTION
    per_trained = 2 + 2 + 4 + 4 + 4
    if method == "full":
        return n_params * per_trained
    if method == "lora":
        return n_params * 2 + adapter_params * per_trained
    if method == "qlora":
        return weight_bytes(n_params, "nf4") + adapter_params * per_trained
    raise ValueError(f"unknown method {method!r}")
    ### END SOLUTION

# %% tests id=test_training points=2
check_number(training_bytes(1e9, "full"), 16e9, name='training_bytes(1e9, "full")')
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

check_property(not calls_into(training_bytes, "sparkcourse.capacity"), "training_bytes calls sparkcourse.capacity")

for n, method, adapters in ((8.03e9, "lora", 2e7), (70.55e9, "qlora", 4e7), (7e9, "full", 0), (1234567, "qlora", 0),
                            (3e9, "lora", 0)):
    check_number(training_bytes(n, method, adapters), ref.training_bytes(n, method, adapters), rtol=1e-9,
                 name=f"training_bytes({n:g}, {method!r}, {adapters:g})")
try:
    training_bytes(1e9, "galore")
    raise AssertionError('training_bytes(1e9, "galore") should raise ValueError')
except ValueError:
    pass
### END HIDDEN TESTS

# %% markdown
# **16 bytes is one optimiser's bill, not a law.** It is mixed-precision AdamW as ZeRO counts it (Rajbhandari et
# al., 2020, §3). Other choices, per trained parameter:
#
# - **8-bit AdamW** (Dettmers et al., *8-bit Optimizers via Block-wise Quantization*, 2022; bitsandbytes'
#   `AdamW8bit`) stores the two moments in 8 bits with block-wise scales: 2 + 2 + 4 + 1 + 1 ≈ **10 bytes**;
# - **BF16 states without FP32 master weights** (weights, gradients and both moments in BF16): 2 + 2 + 2 + 2 =
#   **8 bytes** — small updates then get lost in BF16 rounding unless the optimiser uses stochastic rounding
#   or Kahan summation (Zamirai et al., *Revisiting BFloat16 Training*, 2020).
#
# So "the largest model you can fully fine-tune" needs the optimiser stated with it:

# %%
for label, per_param in (("AdamW, mixed precision", 2 + 2 + 4 + 4 + 4), ("8-bit AdamW", 2 + 2 + 4 + 1 + 1),
                         ("BF16 weights, grads and states", 2 + 2 + 2 + 2)):
    print(f"{label:32s} {per_param:2d} B/param -> at most {SPARK_BYTES / per_param / 1e9:5.1f}B parameters "
          "in 128 GB, before activations")

# %% markdown
# **Activations** come on top, and grow with batch × sequence length. For a GPT-style layer in 16-bit,
# Korthikanti et al. (*Reducing Activation Recomputation in Large Transformer Models*, 2022, §4) count about
# $s\,b\,h\,(34 + 5 a s / h)$ bytes (sequence $s$, batch $b$, hidden $h$, $a$ heads); FlashAttention does not
# store the $a s^2$ attention matrix, leaving about $34\,s\,b\,h$. **Gradient checkpointing** keeps only each
# layer's input ($2\,s\,b\,h$ bytes) and recomputes the rest during the backward pass: one more forward pass,
# so about 8ND instead of 6ND FLOPs. For Llama-3-8B (an estimate: Llama's MLP differs from GPT's):

# %%
cfg8 = CONFIGS["meta-llama/Meta-Llama-3-8B"]
h, L8 = cfg8["hidden_size"], cfg8["num_hidden_layers"]
for s_len, b in ((2048, 1), (8192, 1), (2048, 8)):
    full = 34 * s_len * b * h * L8
    ckpt = 2 * s_len * b * h * L8 + 34 * s_len * b * h  # layer inputs + one layer recomputed at a time
    print(f"seq {s_len:5d} x batch {b}: activations {full / GB:6.1f} GB, with checkpointing {ckpt / GB:5.2f} GB")

# %% markdown
# What fits? LoRA of rank 16 on the attention projections of each model, with the course planner:

# %%
for name in ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B"):
    cfg = CONFIGS[name]
    n = capacity.param_count(cfg).total
    adapters = capacity.lora_params(cfg, r=16)
    for method in ("full", "lora", "qlora"):
        need = capacity.training_bytes(n, method, adapters)
        verdict = "fits" if need < SPARK_BYTES else "does NOT fit"
        print(f"{name:28s} {method:5s} {need / GB:8.1f} GB before activations -> {verdict} in 128 GB")
print(f"largest full fine-tune before activations: {capacity.largest_trainable(SPARK_BYTES) / 1e9:.1f}B parameters")

# %% markdown
# ## 5. Capstone: audit a circulating capacity table
#
# Tables like the one below circulate in posts about the Spark. Each row claims a number. Your job: compute
# each one, and decide whether it **holds** (within 10%).
#
# ### Exercise 5 (3 points)
# Write `audit_claim(claim)` returning a dict with `"computed"` (the value in the claim's unit, from your own
# functions), `"rel_error"` = (claimed − computed) / computed, and `"holds"` = |rel_error| ≤ 0.10.
# The quantities are `"weights_gb"` (model, fmt), `"kv_mb_per_token"` (model, bytes_per_value; MB = 1e6 bytes)
# and `"full_ft_max_params_b"`: the most parameters (in billions) whose full fine-tuning state fits in
# `SPARK_BYTES`, before activations. Raise `ValueError` for an unknown quantity. Use `moe_params` for Mixtral.

# %% setup id=claims
CLAIMS = [
    dict(what="Llama-3-8B weights in BF16", quantity="weights_gb", model="meta-llama/Meta-Llama-3-8B",
         fmt="bf16", claimed=16.0),
    dict(what="Llama-3-70B weights in FP4", quantity="weights_gb", model="meta-llama/Meta-Llama-3-70B",
         fmt="nvfp4", claimed=35.0),
    dict(what="Llama-3-70B weights in FP8", quantity="weights_gb", model="meta-llama/Meta-Llama-3-70B",
         fmt="fp8", claimed=70.0),
    dict(what="Mixtral-8x7B weights in FP8", quantity="weights_gb", model="mistralai/Mixtral-8x7B-v0.1",
         fmt="fp8", claimed=47.0),
    dict(what="Llama-3-70B KV cache per token (FP16)", quantity="kv_mb_per_token",
         model="meta-llama/Meta-Llama-3-70B", bytes_per_value=2, claimed=0.65),
    dict(what="Largest full fine-tune in 128 GB (billions of parameters)", quantity="full_ft_max_params_b",
         claimed=12.0),
]
for c in CLAIMS:
    print(f"{c['what']:58s} claimed {c['claimed']}")

# %% solution id=audit
def audit_claim(claim):
    """Compute the claimed quantity; return computed value, relative error and whether the claim holds."""
    ### BEGIN SOLUTION
    q = claim["quantity"]
    if q == "weights_gb":
        cfg = CONFIGS[claim["model"]]
        n = moe_params(cfg)[0] if "num_local_experts" in cfg else dense_params(cfg)
        value = weight_bytes(n, claim["fmt"]) / GB
    elif q == "kv_mb_per_token":
        value = kv_bytes_per_token(CONFIGS[claim["model"]], claim["bytes_per_value"]) / MB
    elif q == "full_ft_max_params_b":
        value = SPARK_BYTES / training_bytes(1, "full") / 1e9
    else:
        raise ValueError(f"unknown quantity {q!r}")
    rel = (claim["claimed"] - value) / value
    return {"computed": value, "rel_error": rel, "holds": abs(rel) <= 0.10}
    ### END SOLUTION

# %% tests id=test_audit points=3
results = [audit_claim(c) for c in CLAIMS]
check_property(all({"computed", "rel_error", "holds"} <= set(r) for r in results),
               "each result needs the keys computed, rel_error and holds")
check_property(results[0]["holds"], "Llama-3-8B in BF16 is about 16 GB: that claim holds")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w00_spark_capacity as ref
from sparkcourse.testing import calls_into

for c, r in zip(CLAIMS, results, strict=True):
    want = ref.audit_claim(c, CONFIGS, SPARK_BYTES)
    check_number(r["computed"], want["computed"], rtol=1e-6, name=f"computed value for {c['what']!r}")
    check_number(r["rel_error"], want["rel_error"], rtol=1e-6, atol=1e-9, name=f"rel_error for {c['what']!r}")
    check_property(bool(r["holds"]) == want["holds"], f"verdict for {c['what']!r}")
extra = dict(what="x", quantity="weights_gb", model="meta-llama/Meta-Llama-3-8B", fmt="nf4", claimed=3.9)
check_property(bool(audit_claim(extra)["holds"]) == ref.audit_claim(extra, CONFIGS, SPARK_BYTES)["holds"],
               "verdict for an NF4 claim")
try:
    audit_claim(dict(quantity="vibes", claimed=1.0))
    raise AssertionError("an unknown quantity should raise ValueError")
except ValueError:
    pass
### END HIDDEN TESTS

# %% markdown
# **Why the wrong rows are wrong** (run the next cell after your audit):
# - *70B in FP4 = 35 GB* forgets NVFP4's block scales: 4.5 bits, not 4, per weight — and the model has 70.6B
#   parameters, not 70B.
# - *0.65 MB of KV cache per token* is the figure for a model with twice Llama-3-70B's KV: with 8 KV heads of
#   128 over 80 layers, K and V hold 163,840 values per token.
# - *12B parameters of full fine-tuning* does not hold for the standard recipe: AdamW in mixed precision needs
#   16 bytes per parameter before activations, so 128 GB holds the state of 8B parameters, and activations push
#   the practical limit lower. The claim holds only with 8-bit AdamW (≈ 10 bytes: 12.8B) — a claim about
#   capacity must name its optimiser. LoRA and QLoRA are how a Spark fine-tunes 70B models.

# %%
for c in CLAIMS:
    try:
        r = audit_claim(c)
        print(f"{c['what']:58s} claimed {c['claimed']:6g}  computed {r['computed']:8.3f}  "
              f"{'holds' if r['holds'] else 'WRONG'} ({r['rel_error']:+.0%})")
    except NotImplementedError:
        print("finish Exercise 5 first")
        break

# %% markdown
# ## Explore: a capacity explorer
# Pick a model, the precision of weights and cache, a context length and a batch size. (Interactive cells skip
# themselves while the notebook is graded.)

# %%
if not sc.grading():
    import ipywidgets as widgets

    def show(model, weights, cache_bytes, context, batch):
        cfg = CONFIGS[model]
        count = capacity.param_count(cfg)
        w = capacity.weight_bytes(count.total, weights)
        kv = capacity.kv_bytes_per_token(cfg, cache_bytes) * context * batch
        total = w + kv
        print(f"weights {w / GB:7.1f} GB + KV cache {kv / GB:7.1f} GB = {total / GB:7.1f} GB "
              f"({total / SPARK_BYTES:.0%} of 128 GB) -> {'fits' if total < SPARK_BYTES else 'does NOT fit'}")
        print(f"max context at this batch: {capacity.max_context(SPARK_BYTES, cfg, weights, cache_bytes, batch):,} "
              f"by memory; {capacity.usable_context(SPARK_BYTES, cfg, weights, cache_bytes, batch, RESERVE):,} "
              "usable (10 GB reserve, trained context)")

    widgets.interact(show, model=list(CONFIGS), weights=["bf16", "fp8", "nvfp4", "mxfp4", "int4", "nf4"],
                     cache_bytes=widgets.Dropdown(options=[("FP16", 2.0), ("FP8", 1.0)]),
                     context=widgets.IntSlider(value=8192, min=1024, max=131072, step=1024),
                     batch=widgets.IntSlider(value=1, min=1, max=64))

# %% markdown
# ## On your Spark
# In the `spark` profile this cell reads what the machine really has: the unified pool the GPU shares with the
# CPU (from `/proc/meminfo`) and what CUDA reports as free — the OS and the CUDA context have already taken their
# share. (`describe()` reports **GiB**, $2^{30}$ bytes; this notebook counts **GB**, $10^9$ bytes: 128 GB is
# 119.2 GiB.) It then plans Llama-3.1-8B's KV cache from its shipped config and allocates it on the GPU, to
# compare the planned bytes with what PyTorch measures (`torch.cuda.max_memory_allocated`).

# %%
import json
from pathlib import Path

import torch

if profile.is_spark and torch.cuda.is_available():
    from sparkcourse import gpu

    info = gpu.detect()
    print(info.describe(), f"= {info.total_memory_bytes / GB:.1f} GB")
    free, total = torch.cuda.mem_get_info()
    print(f"CUDA reports {free / GB:.1f} GB free of {total / GB:.1f} GB")
    act_reserve = 4 * GB  # activations and workspace: an assumption, as above
    for label, cfg in (("Llama-3-70B", cfg70), ("Llama-3.1-70B", llama31)):
        mem = capacity.max_context(free, cfg, "nvfp4", 1.0)
        usable = capacity.usable_context(free, cfg, "nvfp4", 1.0, reserve_bytes=act_reserve)
        print(f"{label}: NVFP4 weights + FP8 cache in the free memory: {mem:,} tokens by memory, {usable:,} usable "
              f"(trained context {cfg['max_position_embeddings']:,}, {act_reserve / GB:.0f} GB kept for activations)")
    cfg31 = json.loads((Path(sc.__file__).parent / "data" / "configs" / "meta-llama--Llama-3.1-8B-Instruct.json")
                       .read_text())
    tokens = min(32768, cfg31["max_position_embeddings"])
    planned = capacity.kv_bytes_per_token(cfg31, 2.0) * tokens
    hd = cfg31.get("head_dim") or cfg31["hidden_size"] // cfg31["num_attention_heads"]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    cache = torch.empty(cfg31["num_hidden_layers"], 2, cfg31["num_key_value_heads"], tokens, hd,
                        dtype=torch.bfloat16, device="cuda")
    cache.zero_()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before
    print(f"Llama-3.1-8B BF16 KV cache for {tokens:,} tokens: planned {planned / GB:.3f} GB, "
          f"measured {measured / GB:.3f} GB ({measured / planned - 1:+.2%})")
    del cache
    torch.cuda.empty_cache()
elif profile.is_spark:
    print("spark profile without a CUDA GPU: nothing to measure here")
else:
    print("tiny profile: run this on a DGX Spark (or any CUDA machine) to see its real memory")

# %% markdown
# ## Wrap-up
# - Bits per weight include the scales: NVFP4 is **4.5**, MXFP4 **4.25**, NF4 with double quantisation
#   **≈ 4.127**.
# - Llama-3-70B: 70.6B parameters, **≈ 39.7 GB** at NVFP4, **0.33 MB** of FP16 KV cache per token (0.16 MB at FP8).
# - Full fine-tuning costs **16 bytes per parameter** before activations: about 8B parameters' worth in 128 GB.
# - Full fine-tuning: 16 bytes per parameter with mixed-precision AdamW (8B in 128 GB), ≈ 10 with 8-bit AdamW
#   (12.8B), 8 with BF16 states (16B) — before activations, which gradient checkpointing shrinks.
# - A context that fits in memory is capped by the model's trained context and a reserve.
# - Batch-1 decoding is bandwidth-bound: tokens/s ≤ 273 GB/s ÷ bytes read per token (weights + KV cache);
#   prefill of many tokens is compute-bound (2 FLOPs per parameter per token against ≈ 0.5 PFLOP/s dense FP4).
#
# **Read more:** NVIDIA DGX Spark product page (memory, bandwidth, FP4 figures); Dettmers et al., *QLoRA* (2023),
# §2 (NF4, double quantisation); OCP *Microscaling Formats (MX) v1.0* (MXFP4); NVIDIA, *Introducing NVFP4*
# (technical blog, 2025); Ainslie et al., *GQA* (2023); Rajbhandari et al., *ZeRO* (2020), §3 (16 bytes per
# parameter for mixed-precision Adam); Dettmers et al., *8-bit Optimizers via Block-wise Quantization* (2022);
# Korthikanti et al., *Reducing Activation Recomputation in Large Transformer Models* (2022); Kaplan et al.,
# *Scaling Laws for Neural Language Models* (2020) (6ND).
