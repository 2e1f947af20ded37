# %% markdown
# # Week 04 — Preference optimisation: DPO, SimPO, ORPO, KTO and GRPO from the log-probs up
#
# After supervised fine-tuning a model says *something* plausible; preference optimisation teaches it which of
# two plausible answers people (or a checker) prefer. RLHF did that with a reward model and PPO; **DPO** showed
# that the same objective can be optimised directly from preference pairs with one classification-style loss,
# and a family followed: **SimPO** and **ORPO** drop the reference model, **KTO** learns from unpaired
# thumbs-up/thumbs-down labels, and **GRPO** (DeepSeekMath, DeepSeek-R1) goes back to on-line RL but replaces
# PPO's value network by a group baseline. Every one of them is a few lines on top of one quantity: the
# log-probability of a completion given its prompt.
#
# **You will learn to**
# 1. compute sequence log-probabilities from logits: shift, mask prompt and padding, sum or length-average;
# 2. write the DPO loss and its implicit rewards with a frozen reference model;
# 3. write SimPO (length-normalised, margin γ, no reference) and ORPO (NLL + log-odds ratio, with a stable
#    log(1 − eˣ));
# 4. write KTO for unpaired examples, with its detached reference point;
# 5. compute GRPO's group-normalised advantages, write its clipped surrogate and KL term, and say what TRL's
#    default loss_type "dapo" changes (and why TRL's default GRPO loads no reference model);
# 6. see IPO, DPO's squared-loss sibling, next to your DPO;
# 7. check every loss against **TRL 1.16** to 1e-6 in float64 (the hidden tests do), then train with TRL's
#    trainers on a preference you can verify and measure memory and step time with and without a reference model.
#
# **Time:** about 4 hours: 2½–3 h for sections 1–6 (readers took 1–2 h longer than the 2 h this notebook used to
# promise), plus about 20 minutes of CPU training in section 7 (15 min on a shared 2-vCPU machine). **Points:** 17,
# all autograded (the training comparison of section 7 and IPO are not graded).
#
# Why it matters on the Spark: with 128 GB of unified memory, whether an alignment run needs a second, frozen
# copy of the model (DPO, KTO) or not (SimPO, ORPO) decides how large a model you can align. A claim that
# circulates is that reference-free methods "need half the memory of DPO". Section 7 measures what the
# reference model really costs and explains when "half" is right and when it is far off.

# %% setup id=setup
import math
import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
import torch.nn.functional as F

import sparkcourse as sc
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
D = torch.float64


def token_logps_and_mask(seed, batch=4, T=6, scale=2.0, min_len=1):
    """Given: per-token log-probs (≤ 0, float64) of `batch` completions padded to `T`, and their 0/1 mask."""
    g = torch.Generator().manual_seed(seed)
    tok = -torch.rand(batch, T, generator=g, dtype=D) * scale
    lengths = torch.randint(min_len, T + 1, (batch,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    return tok * mask, mask


print("torch", torch.__version__)

# %% markdown
# ## 1. The log-probability of a completion
#
# A causal LM maps token ids $x_0,\dots,x_{L-1}$ to logits whose position $t$ predicts token $t+1$. For a
# prompt followed by a completion, padded to a common length in a batch,
#
# $$\log \pi(y\mid x) = \sum_{t:\ m_{t+1}=1} \log \mathrm{softmax}(z_t)[x_{t+1}],$$
#
# where the **completion mask** $m$ is 1 on completion tokens and 0 on prompt tokens and padding. Three
# classic mistakes: forgetting the shift (position $t$ scored against token $t$), scoring the prompt (the
# prompt is given, not generated), and scoring padding. DPO and KTO use the **sum**; SimPO and ORPO use the
# **length-averaged** value $\frac{1}{|y|}\log\pi(y\mid x)$, so that long answers are not penalised just for
# being long.
#
# In TRL this is `get_batch_logps(logits, labels, average_log_prob)` of the CPO and ORPO trainers (labels are
# the ids with `-100` on prompt and padding) and the fused LM head of `DPOTrainer`.

# %% markdown
# ### Exercise 1 (3 points)
# Write `sequence_logps(logits, input_ids, completion_mask, average=False)`: `logits` is `(B, L, V)`,
# `input_ids` and `completion_mask` are `(B, L)`. Return a `(B,)` tensor: the summed log-probability of the
# completion tokens, or their mean when `average=True`. Keep the dtype of `logits` (the tests use float64).

# %% solution id=sequence_logps
def sequence_logps(logits, input_ids, completion_mask, average=False):
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    ### BEGIN SOLUTION
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
    return total / mask.sum(-1) if average else total
    ### END SOLUTION

# %% tests id=test_sequence_logps points=3
# Uniform logits over 4 tokens: every token has log-prob -log 4. Row 0: prompt of 2, completion of 3, 1 pad.
_logits = torch.zeros(1, 6, 4, dtype=D)
_ids = torch.tensor([[1, 2, 3, 0, 1, 0]])
_mask = torch.tensor([[0, 0, 1, 1, 1, 0]])
check_number(sequence_logps(_logits, _ids, _mask)[0], -3 * math.log(4),
             name="summed log-prob of 3 completion tokens under uniform logits (prompt and padding masked?)")
check_number(sequence_logps(_logits, _ids, _mask, average=True)[0], -math.log(4),
             name="length-averaged log-prob")
_full = torch.tensor([[0, 0, 1, 1, 1, 1]])  # no padding: the completion runs to the last position (4 tokens)
check_number(sequence_logps(_logits, _ids, _full)[0], -4 * math.log(4),
             name="summed log-prob of a 4-token completion that ends at the last position (is your mask aligned "
                  "with the shifted targets?)")
_peaked = torch.full((1, 6, 4), -30.0, dtype=D)
_peaked[0, torch.arange(5), _ids[0, 1:]] = 0.0  # position t puts all its mass on token t+1
check_number(sequence_logps(_peaked, _ids, _mask)[0], 0.0, atol=1e-9,
             name="log-prob when each position predicts the next token exactly (did you shift?)")
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

for _seed in (0, 1, 2):
    _g = _t.Generator().manual_seed(_seed)
    _b, _L, _v = 5, 11, 13
    _lg = _t.randn(_b, _L, _v, generator=_g, dtype=_t.float64) * 4
    _id = _t.randint(0, _v, (_b, _L), generator=_g)
    _p = _t.randint(1, 5, (_b,), generator=_g)
    _n = _t.randint(6, _L + 1, (_b,), generator=_g)
    _pos = _t.arange(_L)[None, :]
    _m = ((_pos >= _p[:, None]) & (_pos < _n[:, None])).long()
    for _avg in (False, True):
        check_close(sequence_logps(_lg, _id, _m, average=_avg), _ref.sequence_logps(_lg, _id, _m, average=_avg),
                    rtol=1e-6, atol=1e-6, name=f"sequence_logps(seed {_seed}, average={_avg})")
### END HIDDEN TESTS

# %% markdown
# Where do the log-probs of a real answer go? Below: the course's tiny chat model (if its files are installed)
# scoring the correct and the wrong answer of a few arithmetic preference pairs.

# %%
from sparkcourse import models as course_models

HAVE_TINY_LM = (course_models.TINY_LM_PATH / "config.json").exists()


# tokenize_pair(tokenizer, prompt, answer) -> (ids, completion mask): the chat prompt, then the answer and the
# end-of-turn token; the mask is 1 on the answer. It lives in sparkcourse/labs/w04_preference.py (section 7 uses it too).
from sparkcourse.labs.w04_preference import tokenize_pair

if HAVE_TINY_LM and not sc.grading():
    from sparkcourse.datasets_course import load_preferences

    lm, tok = course_models.load_tiny_lm()
    for row in load_preferences("test").select(range(4)):
        for kind in ("chosen", "rejected"):
            ids, m = tokenize_pair(tok, row["prompt"], row[kind])
            with torch.no_grad():
                logits = lm(torch.tensor([ids])).logits.double()
            s = sequence_logps(logits, torch.tensor([ids]), torch.tensor([m]))
            a = sequence_logps(logits, torch.tensor([ids]), torch.tensor([m]), average=True)
            print(f"{row['prompt']:22s} {kind:8s} {row[kind]:>5s}: sum {s.item():8.3f}  mean {a.item():7.3f}")
else:
    print("skipped (grading, or the tiny course LM is not installed in sparkcourse/data/tiny_lm)")

# %% markdown
# ## 2. DPO: the reward model is the policy
#
# RLHF maximises $\mathbb{E}[r(x,y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_\text{ref})$. Its optimum is
# $\pi^*(y|x)\propto\pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}$, so any reward can be written through the policy as
# $r(x,y) = \beta\log\frac{\pi(y|x)}{\pi_\text{ref}(y|x)} + \text{const}(x)$. Put that into the Bradley–Terry
# model of preferences and the constant cancels (Rafailov et al. 2023):
#
# $$\mathcal{L}_\text{DPO} = -\log\sigma\Big(\beta\big[(\log\pi(y_w) - \log\pi_\text{ref}(y_w))
#   - (\log\pi(y_l) - \log\pi_\text{ref}(y_l))\big]\Big),$$
#
# averaged over the batch, with **summed** sequence log-probs. Compute $-\log\sigma(x)$ with `F.logsigmoid`
# (or `F.softplus(-x)`), never as `torch.log(torch.sigmoid(x))`: for a margin below about −745 in float64 (−104
# in float32) σ rounds to 0 and the log is −∞, and summed log-probs of long answers reach such margins. The
# tests use extreme log-probs. The **implicit rewards**
# $\beta(\log\pi - \log\pi_\text{ref})$ are what TRL logs as `rewards/chosen` and `rewards/rejected`; their
# difference is `rewards/margins`, and the fraction of pairs where the chosen reward is larger is
# `rewards/accuracies` — "reward accuracy" in TRL's sense: relative to the reference, on summed log-probs, on the
# training batches (section 7 measures something else and calls it *ranking accuracy*). The reference model is **frozen**: it is evaluated under `torch.no_grad()` (or its
# log-probs are precomputed once), and no gradient may reach it.

# %% markdown
# ### Exercise 2 (3 points)
# Write `dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1)`.
# All six tensors are `(B, T)`: per-token log-probs of the policy and of the reference model, with the
# completion masks (1 on completion tokens). Return `(loss, chosen_rewards, rejected_rewards)`: the scalar mean
# loss and the two `(B,)` implicit rewards, **detached**. The reference log-probs must receive no gradient,
# even when the caller passes tensors that require one.

# %% solution id=dpo_loss
def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1):
    """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
    ### BEGIN SOLUTION
    def seq(tok, mask):
        return (tok * mask).sum(-1)

    chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask)
    rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    ### END SOLUTION

# %% tests id=test_dpo_loss points=2
_c, _cm = token_logps_and_mask(10)
_r, _rm = token_logps_and_mask(11)
_loss, _cr, _rr = dpo_loss(_c, _r, _c, _r, _cm, _rm)
check_number(_loss, math.log(2), name="DPO loss when the policy equals the reference (should be log 2)")
check_close(_cr, torch.zeros(4, dtype=D), atol=1e-12, name="chosen rewards when policy == reference")
_loss2, _cr2, _ = dpo_loss(_c + 0.1 * _cm, _r, _c, _r, _cm, _rm, beta=0.5)
check_property(_loss2 < math.log(2), "raising the chosen log-probs must lower the DPO loss (check the sign)")
check_close(_cr2, 0.5 * 0.1 * _cm.sum(-1), name="chosen rewards = beta * (summed log pi - summed log pi_ref)")
_far, _, _ = dpo_loss(_c - 500 * _cm, _r, _c, _r, _cm, _rm, beta=2.0)  # chosen log-probs far below the reference
check_property(bool(torch.isfinite(_far)) and float(_far) > 500,
               "DPO loss must stay finite (and large) for a very negative margin: use F.logsigmoid, "
               "not log(sigmoid(...))")
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

for _beta in (0.1, 0.5, 2.0):
    _c, _cm = token_logps_and_mask(20, batch=7, T=9)
    _r, _rm = token_logps_and_mask(21, batch=7, T=9)
    _rc, _ = token_logps_and_mask(22, batch=7, T=9)
    _rr, _ = token_logps_and_mask(23, batch=7, T=9)
    _r[0], _rm[0], _rc[0], _rr[0] = _c[0], _cm[0], _c[0], _c[0]  # a tie
    _c[2] = _c[2] * 300                                          # very negative log-probs
    _got = dpo_loss(_c, _r, _rc, _rr, _cm, _rm, beta=_beta)
    _want = _ref.dpo_loss(_c, _r, _rc, _rr, _cm, _rm, beta=_beta)
    for _i, _what in enumerate(("loss", "chosen_rewards", "rejected_rewards")):
        check_close(_got[_i], _want[_i], rtol=1e-6, atol=1e-6, name=f"dpo_loss {_what} (beta={_beta})")
### END HIDDEN TESTS

# %% tests id=test_dpo_frozen_reference points=1
### BEGIN HIDDEN TESTS
import torch as _t

_c, _cm = token_logps_and_mask(30)
_r, _rm = token_logps_and_mask(31)
_c = _c.clone().requires_grad_(True)
_rc = (_c.detach() + 0.1).requires_grad_(True)  # as if the reference forward had been run with grad enabled
_rr = (_r.detach() - 0.2).requires_grad_(True)
_loss, _cr, _rw = dpo_loss(_c, _r, _rc, _rr, _cm, _rm)
_loss.backward()
check_property(_c.grad is not None, "the policy's chosen log-probs received no gradient")
check_property(_rc.grad is None or float(_rc.grad.abs().max()) == 0.0,
               "gradient flows into the reference model's log-probs: the reference must be frozen (detach)")
check_property(_rr.grad is None or float(_rr.grad.abs().max()) == 0.0,
               "gradient flows into the reference model's rejected log-probs (detach them)")
check_property(not _cr.requires_grad and not _rw.requires_grad, "the implicit rewards must be detached")
### END HIDDEN TESTS

# %% markdown
# How does the DPO gradient weigh a pair? $\partial\mathcal{L}/\partial\Delta = -\beta\,\sigma(-\beta\Delta)$
# with $\Delta$ the log-ratio margin: pairs the model already orders correctly get little weight, mistakes get
# up to β. β sets how far the policy may move from the reference before the loss saturates.

# %%
import matplotlib.pyplot as plt

margins = torch.linspace(-20, 20, 201, dtype=D)
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
for beta in (0.1, 0.5, 2.0):
    ax[0].plot(margins, -F.logsigmoid(beta * margins), label=f"β={beta}")
    ax[1].plot(margins, beta * torch.sigmoid(-beta * margins), label=f"β={beta}")
ax[0].set(xlabel="log-ratio margin Δ", ylabel="DPO loss")
ax[1].set(xlabel="log-ratio margin Δ", ylabel="|dL/dΔ| = β σ(−βΔ)")
ax[0].legend()
plt.tight_layout()
plt.show()

# %% markdown
# ### IPO: the same log-ratios, a squared loss (not graded)
# DPO's loss keeps falling as the margin grows, so on pairs that are always ranked the same way it can drive the
# log-ratio margin to infinity and the policy far from the reference, whatever β is. **IPO** (Azar et al. 2023,
# *A General Theoretical Paradigm to Understand Learning from Human Preferences*, Eq. 17) regresses the margin to a
# finite target instead:
#
# $$\mathcal{L}_\text{IPO} = \Big(\big(\bar\Delta_w - \bar\Delta_l\big) - \frac{1}{2\beta}\Big)^2,\qquad
#   \bar\Delta = \overline{\log\pi} - \overline{\log\pi_\text{ref}},$$
#
# where TRL (`DPOConfig(loss_type="ipo")`, β is the paper's τ) **averages** each log-ratio over the completion
# tokens — a choice the paper does not write but its authors confirmed to TRL. It still needs the reference
# model. `sparkcourse.labs.w04_preference.ipo_loss` is that formula (`tests/weeks/test_w04_preference.py` checks it
# against TRL's `DPOTrainer` to 1e-6); below, the two losses on one pair as the margin grows.

# %%
from sparkcourse.labs.w04_preference import ipo_loss

_one = torch.ones(1, 1, dtype=D)
print("margin  DPO loss (beta 0.1)  IPO loss (beta 0.1: target margin 1/(2 beta) = 5)")
for m in (-5.0, 0.0, 2.5, 5.0, 10.0, 20.0):
    pol = torch.tensor([[m]], dtype=D)  # chosen log-ratio m, rejected 0, one completion token each
    zero = torch.zeros(1, 1, dtype=D)
    try:
        d = dpo_loss(pol, zero, zero, zero, _one, _one, beta=0.1)[0].item()
    except NotImplementedError:
        d = float("nan")  # Exercise 2 not done yet
    print(f"{m:6.1f}  {d:19.4f}  {ipo_loss(pol, zero, zero, zero, _one, _one, beta=0.1).item():10.4f}")

# %% markdown
# DPO's loss keeps decreasing past any margin; IPO's is 0 at the target and rises again beyond it, which keeps the
# policy closer to the reference on deterministic preferences.
#
# ## 3. SimPO: no reference, length-normalised, with a margin
#
# SimPO (Meng, Xia & Chen 2024) uses the length-averaged log-prob as the implicit reward and asks the chosen
# reward to beat the rejected one by a target margin γ:
#
# $$\mathcal{L}_\text{SimPO} = -\log\sigma\Big(\tfrac{\beta}{|y_w|}\log\pi(y_w) - \tfrac{\beta}{|y_l|}\log\pi(y_l)
#  - \gamma\Big).$$
#
# γ is **outside** the β-scaled difference: TRL writes the same thing as $\beta\,(\Delta - \gamma/\beta)$.
# This exercise's defaults are β = 2 and γ = 0.5, so γ/β = 0.25; the SimPO paper tunes β and γ per model, so treat
# both as hyper-parameters to choose on validation data. In TRL 1.16 SimPO is `CPOTrainer` (`trl.experimental.cpo`)
# with `CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=γ, beta=β)`; `cpo_alpha > 0` adds an NLL term
# (CPO-SimPO). Set all three: `CPOConfig`'s own defaults are `beta=0.1`, `simpo_gamma=0.5` and `cpo_alpha=1.0`
# (γ/β = 5, CPO's β, not a SimPO setting), and section 7 trains with β = 2, γ = 1.

# %% markdown
# ### Exercise 3 (2 points)
# Write `simpo_loss(chosen, rejected, chosen_mask, rejected_mask, beta=2.0, gamma=0.5)` on `(B, T)` per-token
# log-probs and masks. Return `(loss, chosen_rewards, rejected_rewards)`: the mean loss and the detached rewards
# β · (length-averaged log-prob).

# %% solution id=simpo_loss
def simpo_loss(chosen, rejected, chosen_mask, rejected_mask, beta=2.0, gamma=0.5):
    """SimPO loss (mean over pairs) and the detached rewards beta * average log-prob."""
    ### BEGIN SOLUTION
    c = (chosen * chosen_mask).sum(-1) / chosen_mask.sum(-1)
    r = (rejected * rejected_mask).sum(-1) / rejected_mask.sum(-1)
    loss = -F.logsigmoid(beta * (c - r) - gamma).mean()
    return loss, beta * c.detach(), beta * r.detach()
    ### END SOLUTION

# %% tests id=test_simpo_loss points=2
_c, _cm = token_logps_and_mask(40)
_loss, _cr, _rr = simpo_loss(_c, _c, _cm, _cm, beta=2.0, gamma=0.0)
check_number(_loss, math.log(2), name="SimPO loss for identical chosen and rejected with gamma=0 (log 2)")
_loss, _, _ = simpo_loss(_c, _c, _cm, _cm, beta=2.0, gamma=1.0)
check_number(_loss, -math.log(1 / (1 + math.e)), name="SimPO loss for a tie with gamma=1: -log sigmoid(-1)")
_tok = torch.full((1, 6), -0.7, dtype=D)  # the same log-prob per token; chosen 2 tokens long, rejected 5
_short, _long = torch.tensor([[1, 1, 0, 0, 0, 0]], dtype=D), torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=D)
_loss, _, _ = simpo_loss(_tok, _tok, _short, _long, beta=2.0, gamma=1.0)
check_number(_loss, -math.log(1 / (1 + math.e)),
             name="SimPO loss when chosen and rejected have the same per-token log-prob but different lengths "
                  "(a tie: SimPO length-averages)")
_far, _, _ = simpo_loss(_c - 1000 * _cm, _c, _cm, _cm, beta=2.0, gamma=0.5)
check_property(bool(torch.isfinite(_far)), "SimPO loss must stay finite for very negative log-probs (F.logsigmoid)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w04_preference as _ref

for _beta, _gamma in ((2.0, 0.5), (2.5, 0.0), (0.7, 1.4), (1.0, 0.3)):
    _c, _cm = token_logps_and_mask(41, batch=6, T=10)
    _r, _rm = token_logps_and_mask(42, batch=6, T=10)
    _r[0], _rm[0] = _c[0], _cm[0]
    _c[3] = _c[3] * 300
    _got = simpo_loss(_c, _r, _cm, _rm, beta=_beta, gamma=_gamma)
    _want = _ref.simpo_loss(_c, _r, _cm, _rm, beta=_beta, gamma=_gamma)
    for _i, _what in enumerate(("loss", "chosen_rewards", "rejected_rewards")):
        check_close(_got[_i], _want[_i], rtol=1e-6, atol=1e-6, name=f"simpo_loss {_what} (beta={_beta}, gamma={_gamma})")
### END HIDDEN TESTS

# %% markdown
# ## 4. ORPO: SFT and preference in one loss
#
# ORPO (Hong, Lee & Thorne 2024) needs neither a reference model nor a separate SFT stage: it adds to the NLL
# of the chosen answer a term that raises the **odds** $\frac{p}{1-p}$ of the chosen answer over the rejected
# one, with $p = e^{\ell}$ and $\ell$ the **length-averaged** log-prob:
#
# $$\log\mathrm{OR} = (\ell_w - \ell_l) - \big(\log(1-e^{\ell_w}) - \log(1-e^{\ell_l})\big),\qquad
#   \mathcal{L} = \mathrm{NLL}(y_w) - \lambda\,\mathrm{mean}\log\sigma(\log\mathrm{OR}).$$
#
# λ is `beta` in TRL's `ORPOConfig` (default 0.1). The NLL is the mean over all chosen completion tokens of the
# batch (what `CrossEntropyLoss` with `-100` labels computes).
#
# $\log(1-e^x)$ is the numerical trap: for $x$ near 0, $e^x$ rounds to 1 and the log is $-\infty$; for very
# negative $x$, $1 - e^x$ rounds to 1 and the small part is lost. The stable form (Mächler 2012) switches at
# $x = -\log 2$: use $\log(-\mathrm{expm1}(x))$ above it and $\mathrm{log1p}(-e^x)$ below.

# %% markdown
# ### Exercise 4 (3 points)
# Write `log1mexp(x)` (stable, elementwise, for x < 0) and `orpo_loss(chosen, rejected, chosen_mask,
# rejected_mask, lam=0.1)` on `(B, T)` per-token log-probs. Return `(loss, log_odds)` with `log_odds` the `(B,)`
# log odds ratios.

# %% solution id=orpo_loss
def log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
    ### BEGIN SOLUTION
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
    ### END SOLUTION


def orpo_loss(chosen, rejected, chosen_mask, rejected_mask, lam=0.1):
    """ORPO loss: NLL of the chosen tokens - lam * mean log sigmoid(log odds ratio); also the log odds."""
    ### BEGIN SOLUTION
    nll = -(chosen * chosen_mask).sum() / chosen_mask.sum()
    c = (chosen * chosen_mask).sum(-1) / chosen_mask.sum(-1)
    r = (rejected * rejected_mask).sum(-1) / rejected_mask.sum(-1)
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return nll - lam * F.logsigmoid(log_odds).mean(), log_odds
    ### END SOLUTION

# %% tests id=test_log1mexp points=1
_x = torch.tensor([-1e-3, -0.5, -1.0, -5.0], dtype=D)
check_close(log1mexp(_x), torch.log(1 - torch.exp(_x)), rtol=1e-9, name="log1mexp at moderate x")
check_property(bool(torch.isfinite(log1mexp(torch.tensor([-1e-20], dtype=D))).all()),
               "log1mexp(-1e-20) is not finite: use expm1 near 0")
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

_x = -_t.logspace(-20, 3, 200, dtype=_t.float64)
check_close(log1mexp(_x), _ref.log1mexp(_x), rtol=1e-10, name="log1mexp from -1e-20 to -1000")
### END HIDDEN TESTS

# %% tests id=test_orpo_loss points=2
_c, _cm = token_logps_and_mask(50)
_loss, _odds = orpo_loss(_c, _c, _cm, _cm, lam=0.1)
check_close(_odds, torch.zeros(4, dtype=D), atol=1e-12, name="log odds ratio of identical answers")
_nll = -(_c * _cm).sum() / _cm.sum()
check_number(_loss, float(_nll) + 0.1 * math.log(2), name="ORPO loss for identical answers: NLL + lam*log 2")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w04_preference as _ref

for _lam in (0.1, 0.5):
    _c, _cm = token_logps_and_mask(51, batch=5, T=8, scale=1.5)
    _r, _rm = token_logps_and_mask(52, batch=5, T=8, scale=1.5)
    _c[1], _cm[1] = _c[1] * 100, 1.0          # very negative log-probs on a full-length row
    _c[2], _r[2], _rm[2] = _c[2] * 1e-13, _c[2] * 3e-13, _cm[2]  # near 0: log(1 - e^x) needs expm1
    _got = orpo_loss(_c, _r, _cm, _rm, lam=_lam)
    _want = _ref.orpo_loss(_c, _r, _cm, _rm, lam=_lam)
    check_close(_got[0], _want[0], rtol=1e-6, atol=1e-6, name=f"orpo_loss loss (lam={_lam})")
    check_close(_got[1], _want[1], rtol=1e-6, atol=1e-6, name=f"orpo_loss log_odds (lam={_lam})")
### END HIDDEN TESTS

# %% markdown
# Why bother? Evaluate the naive $\log(1-e^x)$ where ORPO needs it: a model that is nearly certain of an answer
# has an average log-prob close to 0.

# %%
xs = torch.tensor([-1e-3, -1e-8, -1e-12, -1e-17, -50.0], dtype=D)
print("x        naive log(1-e^x)        stable")
for x, naive, stable in zip(xs, torch.log(1 - torch.exp(xs)), log1mexp(xs), strict=True):
    print(f"{x.item():9.0e} {naive.item():22.15g} {stable.item():22.15g}")

# %% markdown
# ## 5. KTO: thumbs up, thumbs down, no pairs
#
# KTO (Ethayarajh et al. 2024) applies a prospect-theory value function to the implied reward
# $r = \log\pi(y|x) - \log\pi_\text{ref}(y|x)$ (summed log-probs) of **unpaired** examples, measured against a
# reference point $z$: an estimate of $\mathrm{KL}(\pi\,\|\,\pi_\text{ref})$ from mismatched prompt/completion
# pairs of the batch, $z = \max\big(0, \mathrm{mean}(\log\pi - \log\pi_\text{ref})\big)$, **detached**: it only
# sets the level, no gradient flows through it. Then
#
# desirable: $\lambda_D\,(1 - \sigma(\beta(r - z)))$, undesirable: $\lambda_U\,(1 - \sigma(\beta(z - r)))$,
#
# averaged over all examples of the batch. With more desirable than undesirable examples (or the reverse), the
# weights are set so that $\lambda_D n_D / (\lambda_U n_U)$ lies in [1, 4/3].

# %% markdown
# ### Exercise 5 (3 points)
# Write `kto_loss(policy_logps, ref_logps, labels, policy_kl_logps, ref_kl_logps, beta=0.1,
# desirable_weight=1.0, undesirable_weight=1.0)`. `policy_logps`, `ref_logps` are `(N,)` summed log-probs,
# `labels` a boolean `(N,)` (True = desirable), `policy_kl_logps`, `ref_kl_logps` the `(M,)` log-probs of the
# mismatched pairs used for the KL estimate. Return `(loss, z)`: the mean loss and the (detached) reference point.

# %% solution id=kto_loss
def kto_loss(policy_logps, ref_logps, labels, policy_kl_logps, ref_kl_logps, beta=0.1,
             desirable_weight=1.0, undesirable_weight=1.0):
    """KTO loss over a batch of unpaired examples, and the reference point z."""
    ### BEGIN SOLUTION
    labels = torch.as_tensor(labels, dtype=torch.bool)
    z = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()
    r = policy_logps - ref_logps.detach()
    good = desirable_weight * (1 - torch.sigmoid(beta * (r[labels] - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - r[~labels])))
    return torch.cat([good, bad]).mean(), z
    ### END SOLUTION

# %% tests id=test_kto_loss points=2
_pol = torch.tensor([-3.0, -4.0], dtype=D)
_loss, _z = kto_loss(_pol, _pol, torch.tensor([True, False]), _pol, _pol)
check_number(_loss, 0.5, name="KTO loss when policy == reference (each term 1 - sigmoid(0))")
check_number(_z, 0.0, name="reference point z when policy == reference")
_loss, _z = kto_loss(_pol, _pol, torch.tensor([True, True]), _pol - 1.0, _pol)
check_number(_z, 0.0, name="z when the KL estimate is negative (clamp at 0)")
_lab = torch.tensor([True, False])
_base, _ = kto_loss(_pol, _pol, _lab, _pol, _pol)
_up_good, _ = kto_loss(_pol + torch.tensor([1.0, 0.0], dtype=D), _pol, _lab, _pol, _pol)
_up_bad, _ = kto_loss(_pol + torch.tensor([0.0, 1.0], dtype=D), _pol, _lab, _pol, _pol)
check_property(float(_up_good) < float(_base), "raising the log-prob of a desirable example must lower the KTO loss")
check_property(float(_up_bad) > float(_base),
               "raising the log-prob of an undesirable example must raise the KTO loss (check the sign of its term)")
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

_g = _t.Generator().manual_seed(60)
_n = 9
_pol = -_t.rand(_n, generator=_g, dtype=_t.float64) * 20
_rl = -_t.rand(_n, generator=_g, dtype=_t.float64) * 20
_pol[0] = -5000.0
_lab = _t.tensor([True, False, True, True, False, False, True, False, True])
_pkl = -_t.rand(_n, generator=_g, dtype=_t.float64) * 20
for _beta, _wd, _wu, _shift in ((0.1, 1.0, 1.0, 1.0), (0.5, 1.0, 1.33, 2.5), (0.3, 0.7, 1.0, -4.0)):
    _rkl = _pkl - _shift
    _got = kto_loss(_pol, _rl, _lab, _pkl, _rkl, _beta, _wd, _wu)
    _want = _ref.kto_loss(_pol, _rl, _lab, _pkl, _rkl, _beta, _wd, _wu)
    check_close(_got[0], _want[0], rtol=1e-6, atol=1e-6, name=f"kto_loss (beta={_beta}, weights {_wd}/{_wu})")
    check_close(_got[1], _want[1], rtol=1e-6, atol=1e-6, name=f"kto reference point z (KL shift {_shift})")
_all = _t.ones(_n, dtype=_t.bool)
check_close(kto_loss(_pol, _rl, _all, _pkl, _pkl - 1, 0.2)[0], _ref.kto_loss(_pol, _rl, _all, _pkl, _pkl - 1, 0.2)[0],
            rtol=1e-6, atol=1e-6, name="kto_loss with only desirable examples")
### END HIDDEN TESTS

# %% tests id=test_kto_detached points=1
### BEGIN HIDDEN TESTS
import torch as _t

_pol = _t.tensor([-3.0, -4.0, -5.0], dtype=_t.float64, requires_grad=True)
_pkl = _t.tensor([-2.0, -1.0, -3.0], dtype=_t.float64, requires_grad=True)
_loss, _z = kto_loss(_pol, _t.full((3,), -4.5, dtype=_t.float64), _t.tensor([True, False, True]), _pkl,
                     _t.full((3,), -4.0, dtype=_t.float64))
_loss.backward()
check_property(_pol.grad is not None, "the policy log-probs received no gradient")
check_property(_pkl.grad is None or float(_pkl.grad.abs().max()) == 0.0,
               "gradient flows through the reference point z: detach the KL estimate")
check_property(not _t.as_tensor(_z).requires_grad, "z must be returned detached")
### END HIDDEN TESTS

# %% markdown
# ## 6. GRPO: a group baseline instead of a value network
#
# GRPO (Shao et al. 2024, DeepSeekMath) samples $G$ completions per prompt, scores them (here: a verifiable
# reward — is the arithmetic right?) and uses the **group-normalised advantage**
#
# $$A_i = \frac{r_i - \mathrm{mean}(r_{1..G})}{\mathrm{std}(r_{1..G}) + 10^{-4}}$$
#
# for every token of completion $i$ (TRL: `scale_rewards="group"`, std with Bessel's correction; a group whose
# rewards are all equal gets advantage 0 — it teaches nothing). The per-token loss is PPO's **clipped surrogate**
# plus a **KL penalty** towards the reference model:
#
# $$\ell_{i,t} = -\min\big(\rho_{i,t}A_i,\ \mathrm{clip}(\rho_{i,t},\,1-\epsilon,\,1+\epsilon)\,A_i\big)
#   + \beta\,\mathbb{D}_{i,t},\qquad
#   \rho_{i,t} = \frac{\pi_\theta(o_{i,t}\mid q, o_{i,<t})}{\pi_{\theta_\text{old}}(o_{i,t}\mid q, o_{i,<t})},\qquad
#   \mathbb{D}_{i,t} = \frac{\pi_\text{ref}}{\pi_\theta} - \log\frac{\pi_\text{ref}}{\pi_\theta} - 1,$$
#
# with $\pi_{\theta_\text{old}}$ the policy that generated the completions. The ratio is 1 on the first update of
# each batch (TRL's default `num_iterations=1`), so clipping matters only when a batch is reused; beyond
# $1\pm\epsilon$ in the direction the advantage pushes, the token gets no gradient (TRL: `epsilon=0.2`,
# `epsilon_high` for DAPO's wider upper clip). $\mathbb{D}$ is a per-token estimate of
# $\mathrm{KL}(\pi_\theta\,\|\,\pi_\text{ref})$ that is never negative (DeepSeekMath; TRL computes
# `exp(ref - logp) - (ref - logp) - 1`). **TRL's default is `beta=0.0`**: no KL term, and then `GRPOTrainer` does
# not load a reference model at all — default GRPO is reference-free in memory, like SimPO and ORPO (section 7);
# with `beta > 0` (DeepSeek-R1 used 0.001, TRL's documentation notes) a full fine-tune holds a second, frozen copy
# of the model as DPO does. How the per-token loss is **reduced** to a scalar is what `loss_type` decides:
#
# - `"grpo"` (the paper): mean over each completion's tokens, then mean over completions — a token of a short
#   answer weighs more than a token of a long one, which biases towards long wrong answers;
# - `"dapo"` (**TRL's default**, DAPO, Yu et al. 2025): sum over all completion tokens of the batch divided by
#   their number — every token weighs the same.

# %% markdown
# ### Exercise 6 (3 points)
# Write `group_advantages(rewards, num_generations, scale=True)` for a flat `(N,)` tensor of rewards in
# consecutive groups of `num_generations` (`scale=False`: centre only, TRL's `scale_rewards="none"`), and
# `aggregate_loss(per_token_loss, mask, loss_type="dapo")` for `"grpo"` and `"dapo"` (raise `ValueError`
# otherwise). In `"grpo"`, clamp each completion's token count at 1 (as TRL does).

# %% solution id=grpo
def group_advantages(rewards, num_generations, scale=True):
    """(r - group mean) / (group std + 1e-4), flat like rewards."""
    ### BEGIN SOLUTION
    g = rewards.view(-1, num_generations)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)
    ### END SOLUTION


def aggregate_loss(per_token_loss, mask, loss_type="dapo"):
    """Reduce a (B, T) per-token loss with GRPO's or DAPO's normalisation."""
    ### BEGIN SOLUTION
    mask = mask.to(per_token_loss.dtype)
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dapo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    raise ValueError(loss_type)
    ### END SOLUTION

# %% tests id=test_group_advantages points=2
_adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=D), 3)
check_close(_adv[3:], torch.zeros(3, dtype=D), atol=1e-12, name="advantages of a group with equal rewards")
check_number(_adv[:3].sum(), 0.0, atol=1e-9, name="advantages of a group sum to 0")
check_number(_adv[0], (1 - 2 / 3) / (math.sqrt(1 / 3) + 1e-4), name="advantage (std with Bessel's correction)")
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

for _gsize in (2, 3, 8):
    _rw = _t.randn(5 * _gsize, generator=_t.Generator().manual_seed(70 + _gsize), dtype=_t.float64)
    _rw[:_gsize] = 1.0
    for _scale in (True, False):
        check_close(group_advantages(_rw, _gsize, _scale), _ref.group_advantages(_rw, _gsize, _scale),
                    rtol=1e-6, atol=1e-6, name=f"group_advantages(G={_gsize}, scale={_scale})")
### END HIDDEN TESTS

# %% tests id=test_aggregate_loss points=1
_pt = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]], dtype=D)
_m = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=D)
check_number(aggregate_loss(_pt, _m, "grpo"), 2.5, name='aggregate_loss(..., "grpo") (per-sequence means)')
check_number(aggregate_loss(_pt, _m, "dapo"), 8 / 5, name='aggregate_loss(..., "dapo") (per-token mean)')
### BEGIN HIDDEN TESTS
import torch as _t

from sparkcourse.reference import w04_preference as _ref

_g = _t.Generator().manual_seed(80)
_pt = _t.randn(6, 7, generator=_g, dtype=_t.float64)
_m = (_t.arange(7)[None] < _t.tensor([1, 7, 3, 5, 2, 6])[:, None]).to(_t.float64)
for _lt in ("grpo", "dapo"):
    check_close(aggregate_loss(_pt, _m, _lt), _ref.aggregate_loss(_pt, _m, _lt), rtol=1e-6, atol=1e-6,
                name=f"aggregate_loss({_lt!r})")
try:
    aggregate_loss(_pt, _m, "ppo")
    raise AssertionError('aggregate_loss(..., "ppo") should raise ValueError')
except ValueError:
    pass
### END HIDDEN TESTS

# %% markdown
# The clipped surrogate in numbers (not graded): the loss of one token and its gradient with respect to the ratio,
# for a positive and a negative advantage, ε = 0.2.

# %%
ratios = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.3], dtype=D, requires_grad=True)
for a in (1.0, -1.0):
    surrogate = -torch.minimum(ratios * a, ratios.clamp(0.8, 1.2) * a)
    (grad,) = torch.autograd.grad(surrogate.sum(), ratios)
    print(f"A={a:+.0f}: ratio {ratios.tolist()} -> loss {[round(v, 2) for v in surrogate.tolist()]}, "
          f"d loss/d ratio {grad.tolist()}")

# %% markdown
# With A > 0 the token stops being pushed up once its ratio passes 1.2; with A < 0 it stops being pushed down below
# 0.8. On the other side the gradient stays: a token that moved the wrong way is always corrected.
#
# What "dapo" changes, in numbers: a group of 4 answers, one right and short, three wrong and long. The wrong
# answers' tokens get a negative advantage; under "grpo" each long wrong answer's push-down is diluted over its
# many tokens, so the per-token penalty of a wrong answer shrinks as it grows.

# %%
rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=D)
lengths = torch.tensor([3, 12, 24, 40])
adv = group_advantages(rewards, 4)
mask = (torch.arange(40)[None] < lengths[:, None]).to(D)
per_token = -adv[:, None] * mask  # the policy-gradient loss at ratio 1: -A for every token
for lt in ("grpo", "dapo"):
    w = torch.autograd.functional.jacobian(lambda pt, lt=lt: aggregate_loss(pt, mask, lt), per_token)
    print(f"{lt}: weight of one token, by answer length {lengths.tolist()}:",
          [f"{w[i, 0].item():.4f}" for i in range(4)])

# %% markdown
# ## 7. Training with TRL's trainers, and what the reference model costs
#
# The losses above are what TRL's trainers compute (the hidden tests check your functions against the course
# reference, which `tests/test_preference.py` checks against TRL's own code: `DPOTrainer._compute_loss`,
# `CPOTrainer.cpo_loss`, `ORPOTrainer.odds_ratio_loss`, `KTOTrainer._compute_loss`, `GRPOTrainer`'s advantage
# lines). Now the claim: **"ORPO and SimPO need about half the memory of DPO."**
#
# Count it first. DPO keeps a frozen reference copy: its weights, and one extra forward pass per step (no
# activations kept, no gradients, no optimizer state). The policy being trained keeps weights, gradients and
# AdamW's two moments. Per parameter:

# %%
rows = {
    "fp32 full fine-tune (w 4 + g 4 + Adam 8)": (16, 4),
    "mixed precision (bf16 w+g, fp32 master+Adam, bf16 reference)": (16, 2),
    "weights only (inference-style count: 2 copies vs 1)": (2, 2),
    "LoRA on a frozen bf16 base: TRL disables the adapter for the reference": (2, 0),
    "precompute_ref_log_probs=True (reference run once, freed)": (16, 0),
}
print(f"{'setting':72s} {'no ref B/param':>14s} {'DPO B/param':>11s} {'ratio':>6s}")
for name, (policy, ref_bytes) in rows.items():
    print(f"{name:72s} {policy:14d} {policy + ref_bytes:11d} {policy / (policy + ref_bytes):6.2f}")

# %% markdown
# So "half" is right only if you count nothing but weights, as for inference. For training, states and
# gradients dominate and the reference adds 1/8 to 1/4 (before activations); with LoRA it adds nothing at all,
# and with precomputed reference log-probs nothing during training. The cell below measures it on a small Llama
# with random weights (fixed seed; no tokenizer needed): parameters, gradients and AdamW state from the real
# tensors, activations as the bytes autograd saves for backward, and step time, for a DPO step (policy forward
# and backward on chosen+rejected, reference forward under `no_grad`) and a reference-free step (SimPO/ORPO).

# %%
from sparkcourse.labs import w04_preference as lab

if sc.grading():
    print("skipped while grading")
else:
    try:  # your sequence_logps scores policy and reference, your dpo_loss / simpo_loss are the losses
        memory = lab.compare_memory(hidden=192, layers=3, batch=4, length=48, steps=3, logps=sequence_logps,
                                    dpo_loss=dpo_loss, simpo_loss=simpo_loss)
    except NotImplementedError:
        memory = None
        print("finish Exercises 1-3 first")
if not sc.grading() and memory is not None:
    print(lab.format_memory(memory))
    fig, ax = plt.subplots(figsize=(7, 2.8))
    lab.plot_memory(ax, memory)
    plt.tight_layout()
    plt.show()

# %% markdown
# Read the table, not the slogan. The reference adds its weights (one copy: no gradients, no optimizer state, no
# saved activations, since its forward runs under `no_grad`), and nothing else. The committed run
# `benchmarks/preference_tiny_cpu.md` (this `measure_step`, float32, on a shared 2-vCPU AMD EPYC virtual machine
# with one torch thread, 2026-11-29) measured: policy weights, gradients and
# reference weights 7.43 MB each, AdamW state 14.85 MB, saved activations 23.83 MB in both steps; **60.97 MB** for
# the DPO step against **53.54 MB** without a reference, a reference-free/DPO ratio of **0.88** (0.80 counting
# weights, gradients and optimizer state only). "Half" would be 0.50: here dropping the reference saves 12% of the
# step's memory, not half. The claim is right only for a count of weights alone (the inference-style row of the
# per-parameter table). Activations grow with batch × length and both methods pay them, so longer sequences push
# the ratio towards 1; a large model with short sequences approaches the per-parameter 0.80 (fp32 AdamW) or 0.89
# (mixed precision). The step is faster without the reference by one forward pass: over 5 repeats the measured
# reference-free/DPO step-time ratio had a median of 0.85 and ranged from 0.59 to 1.13 (other jobs share that
# CPU, whose load average rose from 10 to 24 during the run; the rule of thumb "a forward pass is a third of
# forward+backward" gives 0.75). Your printed ratio is this
# machine's, from one repeat. Memory is what the slogan is about, and on memory the reference-free methods save
# far less than half.
# On a Spark the same reasoning says: a DPO run of a model that barely fits under full fine-tuning also needs
# room for a bf16 reference (2 bytes per parameter), or `precompute_ref_log_probs=True`, or LoRA. The same holds for
# KTO and for GRPO with `beta > 0`; TRL's GRPO default `beta=0.0` loads no reference at all (section 6).
#
# ### Aligning the tiny course model through TRL
# The course preference data are templated sums ("What is 78 + 93?"): the chosen answer is the right sum, the
# rejected one a plausible wrong one, so the preference is **verifiable**. We train the tiny chat model with each
# trainer on 300 training pairs and measure on the 100 test pairs: the **ranking accuracy** (how often the trained
# model gives the correct answer a higher length-averaged log-prob than the wrong one — no reference model
# involved, so this is *not* TRL's `rewards/accuracies`, which compares DPO's implicit rewards
# β(log π − log π_ref) on summed log-probs during training) and the **exact match** of its greedy answer. The
# learning rates were chosen on 100 further **validation** pairs (the last 100 of the shipped training file),
# never on the test pairs, which were scored once with the chosen settings. This section needs the tiny course LM (`sparkcourse/data/tiny_lm`); it is skipped while grading, and
# its code is in `sparkcourse/labs/w04_preference.py` (your `sequence_logps` does the scoring). First, the untrained
# model:

# %%
if HAVE_TINY_LM and not sc.grading():
    for wording in lab.WORDINGS:
        r = lab.base_row(lab.load_pairs("test", wording), logps=sequence_logps)
        print(f"untrained tiny LM, {wording:12s} wording: ranking accuracy {r['ranking acc']:.2f}, "
              f"exact match {r['exact match']:.2f}")
else:
    print("skipped (grading, or the tiny course LM is not installed in sparkcourse/data/tiny_lm)")

# %% markdown
# In the wording it was pre-trained on, the tiny model already answers every held-out sum correctly: there is
# nothing left for a preference to teach (training can only keep or damage it). So we train and score on the
# same pairs asked as **"Add 78 and 93."**, an instruction wording pre-training never saw, where the untrained
# model rarely answers right. The cell trains each trainer from the same checkpoint for 150 steps of 8 pairs
# (learning rates and β are `lab.DEFAULT_LR` and `lab.DEFAULT_BETA`, chosen on the validation pairs;
# `lab.run_method` shows the TRL configs)
# and takes a few minutes on one CPU thread.

# %%
if HAVE_TINY_LM and not sc.grading():
    train_pairs = lab.load_pairs("train", "held-out", chat=True)  # conversational rows: TRL applies the template
    test_pairs = lab.load_pairs("test", "held-out")                # plain strings for our own evaluation
    table = lab.compare_methods(train_pairs, test_pairs, steps=150, seed=0, logps=sequence_logps)
    print(lab.format_table(table))
    fig, ax = plt.subplots(figsize=(6, 2.8))
    lab.plot_table(ax, table)
    plt.tight_layout()
    plt.show()
else:
    print("skipped (grading, or the tiny course LM is not installed in sparkcourse/data/tiny_lm)")

# %% markdown
# The committed run (`benchmarks/preference_tiny_cpu.md`, 2026-11-29, a shared 2-vCPU AMD EPYC machine, torch on
# one thread) first tried learning rates on the **validation** pairs (seed 0, ranking accuracy / exact match):
# DPO 0.75 / 0.04 at 2e-4, 0.62 / 0.08 at 5e-4, 0.54 / 0.01 at 2e-3; SimPO 0.67 / 0.04, 0.63 / 0.02, 0.63 / 0.00;
# ORPO 0.77 / 0.08, 0.80 / 0.14, **0.96 / 0.89**; KTO 0.74 / 0.04 at 2e-4, 0.69 / 0.02 at 3e-4, 0.60 / 0.04 at
# 5e-4, 0.51 / 0.00 at 1e-3. The best of each (DPO, SimPO and KTO 2e-4; ORPO 2e-3) became `lab.DEFAULT_LR`, and only
# those settings were then trained with seeds 0, 1 and 2 and scored once on the test pairs:
# untrained 0.62 / 0.04; DPO 0.68 ± 0.02 / 0.06 ± 0.02; SimPO 0.67 ± 0.06 / 0.05 ± 0.02; ORPO 0.87 ± 0.14 /
# 0.54 ± 0.43 (per seed 0.97 / 0.92, 0.92 / 0.62, 0.71 / 0.07); KTO 0.67 ± 0.03 / 0.07 ± 0.03 (mean ± sd over the
# 3 seeds). In the pre-training wording (seed 0) the untrained model is already perfect (1.00 / 1.00, the cell
# above) and preference training can only hurt: exact match fell to 0.95 (DPO) to 0.98 (SimPO).
# Your seed-0 row should be close to the benchmark's seed-0 column (other torch versions and thread counts change
# the last digits). Things to notice:
# - Ranking accuracy moves more than exact match for DPO, SimPO and KTO: ranking two given answers is easier than
#   producing the right one, and 150 steps of 8 pairs is 4 passes over 300 pairs.
# - ORPO is the exception: its NLL term trains the chosen answers directly, like SFT, besides the odds ratio, and
#   at its chosen learning rate it learned to *produce* the right sums in the new wording — in two seeds of three.
#   Seed 2 fell back to 0.71 / 0.07: a large learning rate chosen on one seed's validation score is fragile;
#   when it matters, choose on several seeds.
# - DPO, SimPO and KTO did best at the smallest learning rate tried (2e-4); larger ones made them worse. A
#   smaller one might do better still: the grid's edge is not an optimum.
# - Had we tuned on the test pairs, as this notebook once did, the reported numbers would be the best of 13
#   tries on the very pairs reported, an optimistic bias; the validation split keeps the test score honest.
#
# The TRL logs (`rewards/chosen`, `rewards/margins`, `rewards/accuracies`) are the implicit rewards of your
# `dpo_loss` on the training batches; pass `logging_strategy="steps"` to `lab.run_method` to see them. A
# `rewards/accuracies` near 1 says the policy moved away from the reference in the right direction on pairs it
# trains on; the ranking accuracy above says whether the model prefers the right answer on pairs it never saw.
#
# ## On your Spark: what a reference model costs at full size
# The CPU measurement above used a 2-million-parameter model. The `spark` profile repeats it with TRL's own trainers
# on a 1.5-billion-parameter model (Qwen2.5-1.5B-Instruct; with `SPARKCOURSE_STANDIN=1` its architecture with
# random weights), four ways:
#
# - **full fine-tuning, DPO**: fp32 policy weights, gradients and AdamW state (bf16 autocast) plus a separate,
#   frozen bf16 reference copy (`DPOTrainer(ref_model=...)`);
# - **full fine-tuning, SimPO**: the same policy, no reference (`CPOTrainer(loss_type="simpo", cpo_alpha=0)`);
# - **LoRA, DPO** and **LoRA, SimPO**: adapters on a frozen bf16 base. Here TRL's DPO gets its reference by
#   *disabling the adapter* on the same base: no second copy exists, so LoRA cannot show what a reference costs —
#   that is why the full fine-tuning rows are the measurement, and the LoRA rows the contrast.
#
# For each: the bytes resident before training (the weights), the peak of `torch.cuda.max_memory_allocated()` over
# 12 steps of 4 pairs, the drop of `/proc/meminfo`'s MemAvailable (on a Spark the GPU allocates from that unified
# pool and `cudaMemGetInfo` under-reports it; on a discrete GPU this column is host memory) and the median step
# time from CUDA events. Expect the full-fine-tuning DPO peak to exceed SimPO's by about the bf16 reference copy
# (2 bytes per parameter, ≈ 3 GB here) out of a peak of ≈ 25–30 GB: a ratio near 0.9, as in the per-parameter
# table, not 0.5. Expected time: under a minute on an H200 in stand-in mode (short course pairs); a few minutes on
# a Spark with the real model and data set (longer sequences). Memory: ≈ 30 GB at the peak.

# %%
gpu_rows = None
if profile.is_spark:
    # hub: the real model, a labelled stand-in (SPARKCOURSE_STANDIN=1) or a SKIPPED line
    from sparkcourse import hub
    from sparkcourse.datasets_course import load_preferences

    model_id, dataset_id = "Qwen/Qwen2.5-1.5B-Instruct", "trl-lib/ultrafeedback_binarized"
    prefs, prefs_label = hub.dataset(dataset_id, "train[:256]", lambda: load_preferences("train", chat=True),
                                     about="the course's arithmetic preference pairs")
    print("data:", prefs_label)
    # a stand-in gets as many layers as fit: fp32 weights + gradients + AdamW (16 B/param) + a bf16 reference (2 B)
    # + room for activations, so size it by parameters (the same layers whatever the dtype)
    free = hub.free_bytes("cuda") or 0
    max_params = 0.8 * free / 24

    def build(dtype):
        """The policy (or the reference): same architecture and weights on every call."""
        nbytes = torch.empty((), dtype=dtype).element_size()
        model, tokenizer, label = hub.causal_lm(model_id, dtype=dtype, device="cuda", max_bytes=max_params * nbytes)
        return model, tokenizer, label

    try:
        gpu_rows = lab.measure_trl_memory(build, prefs, steps=12, batch=4, max_length=512)
    except hub.Unavailable as exc:
        hub.report(exc)
    if gpu_rows:
        print("model:", next(iter(gpu_rows.values()))["label"])
        print(lab.format_trl_memory(gpu_rows))
else:
    print("tiny profile: run this on a DGX Spark (or any CUDA machine)")

# %% markdown
# Read the full-fine-tuning pair first: the reference-free run saves the reference copy and one forward pass per
# step, and nothing else. The LoRA pair shows the other extreme: the reference is free, so DPO and SimPO need about
# the same memory, and LoRA's own saving (no fp32 gradients or AdamW state for the base) dwarfs the reference
# question. `precompute_ref_log_probs=True` is the third way out: the reference runs once over the data set before
# training, and is not needed during it.

# %% markdown
# ## Wrap-up
# - Sequence log-prob: shift by one, mask prompt and padding; **sum** for DPO/KTO, **mean** for SimPO/ORPO.
# - DPO: $-\log\sigma(\beta[\Delta_w - \Delta_l])$ with $\Delta = \log\pi - \log\pi_\text{ref}$; implicit
#   reward $\beta\Delta$; the reference is frozen. A tie gives $\log 2 \approx 0.693$.
# - SimPO: $-\log\sigma(\beta\bar\ell_w - \beta\bar\ell_l - \gamma)$ — γ outside β; CPOTrainer with
#   `loss_type="simpo", cpo_alpha=0`.
# - ORPO: NLL + λ·(−log σ(log odds)), $\log(1-e^x)$ via expm1/log1p switched at −log 2.
# - KTO: reference point $z=\max(0,\widehat{\mathrm{KL}})$, detached; losses $1-\sigma(\beta(r-z))$ and
#   $1-\sigma(\beta(z-r))$, weighted.
# - GRPO: $A=(r-\bar r_\text{group})/(\sigma_\text{group}+10^{-4})$; per token PPO's clipped surrogate plus
#   β·KL to the reference; TRL's default `beta=0.0` drops the KL term and loads no reference model; its default
#   `loss_type="dapo"` averages over tokens of the whole batch instead of per sequence.
# - IPO: $(\bar\Delta_w - \bar\Delta_l - \tfrac{1}{2\beta})^2$ with length-averaged log-ratios: a finite
#   target margin instead of DPO's ever-decreasing loss; still needs the reference.
# - Memory: a reference model adds its weights only — about 4/16 = 25% at fp32 with AdamW (the table above), 2/16
#   in mixed precision, 0 with LoRA or precomputed reference log-probs. "Half" counts weights alone; measured
#   with activations on a small Llama, reference-free/DPO was 0.88, not 0.50 (`benchmarks/preference_tiny_cpu.md`).
#
# **Read more:** Rafailov et al., *Direct Preference Optimization* (2023); Meng, Xia & Chen, *SimPO* (2024);
# Hong, Lee & Thorne, *ORPO* (2024); Ethayarajh et al., *KTO: Model Alignment as Prospect Theoretic Optimization*
# (2024); Azar et al., *A General Theoretical Paradigm to Understand Learning from Human Preferences* (IPO, 2023);
# Shao et al., *DeepSeekMath* (GRPO, 2024); Yu et al., *DAPO* (2025); Mächler, *Accurately Computing
# log(1 − exp(−|a|))* (2012); TRL 1.16 source: `trainer/dpo_trainer.py`, `experimental/cpo/cpo_trainer.py`,
# `experimental/orpo/orpo_trainer.py`, `trainer/kto_trainer.py`, `trainer/grpo_trainer.py`.
