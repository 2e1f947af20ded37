"""Week 04 reference (sparkcourse.reference.w04_preference) against TRL 1.16's own loss code, in float64.

The oracles are TRL's methods called with a stub ``self`` (and, for DPO/KTO, a stub model whose forward returns the
per-token log-probs we choose), so the losses are compared on exactly the same log-probs.
"""

from __future__ import annotations

import inspect
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl import DPOTrainer, GRPOTrainer, KTOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from sparkcourse.reference import w04_preference as ref  # noqa: E402

D = torch.float64
TOL = dict(rtol=1e-6, atol=1e-6)


class _Acc:
    device = torch.device("cpu")
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def unwrap_model(self, m):
        return m


class _LogpModel:
    """Stands in for the model: its forward returns the per-token log-probs it was given."""

    training = True

    def __init__(self, logps):
        self.logps = logps

    def __call__(self, **kw):
        lp = self.logps
        return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                               is_top1=torch.zeros_like(lp, dtype=torch.bool))


def _tokens(rng, b, t, scale=2.0, low=1):
    """Per-token log-probs (≤ 0) and a completion mask with lengths in [low, t]."""
    tok = -torch.rand(b, t, generator=rng, dtype=D) * scale
    lens = torch.randint(low, t + 1, (b,), generator=rng)
    mask = (torch.arange(t)[None, :] < lens[:, None]).to(D)
    return tok, mask


def trl_batch_logps(logits, input_ids, completion_mask, average):
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    return CPOTrainer.get_batch_logps(logits, labels, average_log_prob=average)


def trl_dpo(chosen_seq, rejected_seq, ref_chosen_seq, ref_rejected_seq, beta):
    """DPOTrainer._compute_loss (loss_type "sigmoid", precomputed reference log-probs) on given sequence logps."""
    b = chosen_seq.shape[0]
    logps = torch.cat([chosen_seq, rejected_seq])[:, None]  # one completion token per row
    model = _LogpModel(logps)
    stub = SimpleNamespace(model=model, accelerator=_Acc(), aux_loss_enabled=False, ld_alpha=None,
                           precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"],
                           loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
                           _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
                           args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": torch.zeros(2 * b, 2, dtype=torch.long), "attention_mask": torch.ones(2 * b, 2),
              "completion_mask": torch.tensor([[0, 1]] * (2 * b)),
              "ref_chosen_logps": ref_chosen_seq, "ref_rejected_logps": ref_rejected_seq}
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    return loss, stub._metrics["train"]


def trl_ipo(c, r, rc, rr, cm, rm, beta):
    """DPOTrainer._compute_loss with loss_type "ipo" on per-token log-probs (the stub model returns them)."""
    b = c.shape[0]
    s = lambda x, m: (x * m).sum(-1)  # noqa: E731
    model = _LogpModel(torch.cat([c * cm, r * rm]))
    completion_mask = torch.cat([torch.zeros(2 * b, 1, dtype=D), torch.cat([cm, rm])], dim=1)  # shifted by one
    stub = SimpleNamespace(model=model, accelerator=_Acc(), aux_loss_enabled=False, ld_alpha=None,
                           precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["ipo"],
                           loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
                           _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
                           args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": torch.zeros(2 * b, c.shape[1] + 1, dtype=torch.long),
              "attention_mask": torch.ones(2 * b, c.shape[1] + 1), "completion_mask": completion_mask,
              "ref_chosen_logps": s(rc, cm), "ref_rejected_logps": s(rr, rm)}
    return DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)


def trl_simpo(chosen_avg, rejected_avg, beta, gamma):
    stub = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta, label_smoothing=0.0,
                           accelerator=_Acc())
    losses, cr, rr = CPOTrainer.cpo_loss(stub, chosen_avg, rejected_avg)
    return losses.mean(), cr, rr


def trl_orpo(nll, chosen_avg, rejected_avg, lam):
    stub = SimpleNamespace(beta=lam, accelerator=_Acc())
    losses, _, _, _, log_odds = ORPOTrainer.odds_ratio_loss(stub, chosen_avg, rejected_avg)
    return nll - losses.mean(), log_odds


def trl_kto(policy, ref_logps, labels, policy_kl, ref_kl, beta, wd, wu):
    """KTOTrainer._compute_loss (loss_type "kto", precomputed reference log-probs)."""
    n = policy.shape[0]
    model = _LogpModel(policy[:, None])
    stub = SimpleNamespace(model=model, accelerator=_Acc(), aux_loss_enabled=False, precompute_ref_logps=True,
                           calculate_KL=True, loss_type="kto", beta=beta, desirable_weight=wd,
                           undesirable_weight=wu, _metrics=defaultdict(lambda: defaultdict(list)),
                           _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    stub._compute_kl_logps = lambda m, batch: policy_kl
    batch = {"input_ids": torch.zeros(n, 2, dtype=torch.long), "attention_mask": torch.ones(n, 2),
             "completion_mask": torch.tensor([[0, 1]] * n), "label": torch.as_tensor(labels),
             "ref_logps": ref_logps, "ref_KL_logps": ref_kl}
    loss = KTOTrainer._compute_loss(stub, model, batch, return_outputs=False)
    return loss, stub._metrics["train"]["kl"][-1]


# ---------------------------------------------------------------- Exercise 1
@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_logps_equals_trl(seed, average):
    rng = torch.Generator().manual_seed(seed)
    b, L, v = 5, 11, 13
    logits = torch.randn(b, L, v, generator=rng, dtype=D) * 4
    ids = torch.randint(0, v, (b, L), generator=rng)
    prompt = torch.randint(1, 5, (b,), generator=rng)
    length = torch.randint(6, L + 1, (b,), generator=rng)
    pos = torch.arange(L)[None, :]
    mask = ((pos >= prompt[:, None]) & (pos < length[:, None])).long()
    got = ref.sequence_logps(logits, ids, mask, average=average)
    want = trl_batch_logps(logits, ids, mask, average)
    torch.testing.assert_close(got, want, **TOL)


# ---------------------------------------------------------------- Exercise 2
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_equals_trl(beta):
    rng = torch.Generator().manual_seed(3)
    b, t = 7, 9
    c, cm = _tokens(rng, b, t)
    r, rm = _tokens(rng, b, t)
    rc, _ = _tokens(rng, b, t)
    rr, _ = _tokens(rng, b, t)
    c[0], r[0], rc[0], rr[0] = c[1], c[1], c[1], c[1]  # a tie: loss log 2
    rm[0] = cm[0] = cm[1]
    c[2] = c[2] * 200  # very negative log-probs
    loss, cr, rrw = ref.dpo_loss(c, r, rc, rr, cm, rm, beta=beta)
    s = lambda x, m: (x * m).sum(-1)  # noqa: E731
    want, metrics = trl_dpo(s(c, cm), s(r, rm), s(rc, cm), s(rr, rm), beta)
    torch.testing.assert_close(loss, want, **TOL)
    assert abs(cr.mean().item() - metrics["rewards/chosen"][-1]) < 1e-9
    assert abs(rrw.mean().item() - metrics["rewards/rejected"][-1]) < 1e-9
    assert abs((cr > rrw).double().mean().item() - metrics["rewards/accuracies"][-1]) < 1e-7  # TRL: .float()


def test_dpo_reference_gets_no_gradient():
    rng = torch.Generator().manual_seed(4)
    c, cm = _tokens(rng, 3, 5)
    r, rm = _tokens(rng, 3, 5)
    c.requires_grad_(True)
    rc = (c.detach() + 0.1).requires_grad_(True)
    rr = r.clone().requires_grad_(True)
    loss, cr, _ = ref.dpo_loss(c, r, rc, rr, cm, rm)
    loss.backward()
    assert rc.grad is None and rr.grad is None and c.grad is not None and not cr.requires_grad


# ---------------------------------------------------------------- IPO (ungraded; the lab's ipo_loss)
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_lab_ipo_equals_trl(beta):
    from sparkcourse.labs.w04_preference import ipo_loss

    rng = torch.Generator().manual_seed(13)
    b, t = 6, 8
    c, cm = _tokens(rng, b, t)
    r, rm = _tokens(rng, b, t)
    rc, _ = _tokens(rng, b, t)
    rr, _ = _tokens(rng, b, t)
    got = ipo_loss(c, r, rc, rr, cm, rm, beta=beta)
    torch.testing.assert_close(got, trl_ipo(c, r, rc, rr, cm, rm, beta), **TOL)
    # a tie: Δ = 0, loss (1/(2β))²
    torch.testing.assert_close(ipo_loss(c, c, c, c, cm, cm, beta=beta), torch.tensor(1 / (2 * beta) ** 2, dtype=D))


# ---------------------------------------------------------------- Exercise 3
@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (2.5, 0.0), (0.7, 1.4), (1.0, 0.3)])
def test_simpo_equals_cpo_simpo(beta, gamma):
    rng = torch.Generator().manual_seed(5)
    c, cm = _tokens(rng, 6, 10)
    r, rm = _tokens(rng, 6, 10)
    r[0], rm[0] = c[0], cm[0]
    c[3] = c[3] * 300
    loss, cr, rr = ref.simpo_loss(c, r, cm, rm, beta=beta, gamma=gamma)
    avg = lambda x, m: (x * m).sum(-1) / m.sum(-1)  # noqa: E731
    want, wcr, wrr = trl_simpo(avg(c, cm), avg(r, rm), beta, gamma)
    torch.testing.assert_close(loss, want, **TOL)
    torch.testing.assert_close(cr, wcr, **TOL)
    torch.testing.assert_close(rr, wrr, **TOL)


# ---------------------------------------------------------------- Exercise 4
def test_log1mexp_equals_trl_and_is_stable():
    x = -torch.logspace(-20, 3, 200, dtype=D)
    torch.testing.assert_close(ref.log1mexp(x), trl_log1mexp(x), rtol=1e-12, atol=1e-300)
    assert torch.isfinite(ref.log1mexp(x)).all()
    naive = torch.log(1 - torch.exp(x))
    assert not torch.isfinite(naive).all()  # the naive form breaks near 0


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_orpo_equals_trl(lam):
    rng = torch.Generator().manual_seed(6)
    c, cm = _tokens(rng, 5, 8, scale=1.5)
    r, rm = _tokens(rng, 5, 8, scale=1.5)
    c[1], cm[1] = c[1] * 100, torch.ones(8, dtype=D)  # very negative
    r[2], rm[2] = c[2] * 3e-13, cm[2]                 # near zero: log(1 - e^x) needs expm1
    c[2] = c[2] * 1e-13
    loss, log_odds = ref.orpo_loss(c, r, cm, rm, lam=lam)
    avg = lambda x, m: (x * m).sum(-1) / m.sum(-1)  # noqa: E731
    # the NLL TRL adds: CrossEntropyLoss over the chosen completion tokens (test_orpo_nll_is_trl_cross_entropy)
    nll = -(c * cm).sum() / cm.sum()
    # TRL's odds_ratio_loss casts to float32 (.float()): compare at float32 precision ...
    want, want_odds = trl_orpo(nll, avg(c, cm), avg(r, rm), lam)
    torch.testing.assert_close(loss, want.to(D), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_odds.mean(), want_odds.to(D), rtol=1e-5, atol=1e-5)  # TRL returns the mean
    # ... and in float64 against TRL's formula with TRL's own log1mexp
    ac, ar = avg(c, cm), avg(r, rm)
    odds64 = (ac - ar) - (trl_log1mexp(ac) - trl_log1mexp(ar))
    torch.testing.assert_close(log_odds, odds64, **TOL)
    torch.testing.assert_close(loss, nll - lam * torch.nn.functional.logsigmoid(odds64).mean(), **TOL)


def test_orpo_nll_is_trl_cross_entropy():
    rng = torch.Generator().manual_seed(7)
    b, L, v = 4, 9, 11
    logits = torch.randn(b, L, v, generator=rng, dtype=D)
    ids = torch.randint(0, v, (b, L), generator=rng)
    mask = (torch.arange(L)[None] >= torch.tensor([2, 3, 4, 5])[:, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    ce = torch.nn.CrossEntropyLoss()(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1))
    tok = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss, _ = ref.orpo_loss(tok, tok, mask[:, 1:].to(D), mask[:, 1:].to(D), lam=0.0)
    torch.testing.assert_close(loss, ce, **TOL)


# ---------------------------------------------------------------- Exercise 5
@pytest.mark.parametrize("beta,wd,wu,shift", [(0.1, 1.0, 1.0, 0.0), (0.5, 1.0, 1.33, 0.0), (0.3, 0.7, 1.0, -5.0)])
def test_kto_equals_trl(beta, wd, wu, shift):
    rng = torch.Generator().manual_seed(8)
    n = 9
    policy = -torch.rand(n, generator=rng, dtype=D) * 20
    ref_logps = -torch.rand(n, generator=rng, dtype=D) * 20
    policy[0] = -5000.0
    labels = [True, False, True, True, False, False, True, False, True]
    pkl = -torch.rand(n, generator=rng, dtype=D) * 20
    rkl = pkl - 1.0 - shift  # shift < 0 makes the KL estimate negative: clamped to 0
    loss, z = ref.kto_loss(policy, ref_logps, labels, pkl, rkl, beta, wd, wu)
    want, want_z = trl_kto(policy, ref_logps, labels, pkl, rkl, beta, wd, wu)
    torch.testing.assert_close(loss, want, **TOL)
    assert abs(float(z) - want_z) < 1e-9


def test_kto_reference_point_is_detached():
    pol = torch.tensor([-3.0, -4.0, -5.0], dtype=D, requires_grad=True)
    pkl = torch.tensor([-2.0, -1.0, -3.0], dtype=D, requires_grad=True)
    loss, z = ref.kto_loss(pol, torch.full((3,), -4.5, dtype=D), [True, False, True], pkl,
                           torch.full((3,), -4.0, dtype=D))
    loss.backward()
    assert pkl.grad is None and pol.grad is not None and not z.requires_grad


# ---------------------------------------------------------------- Exercise 6
def _trl_advantages(rewards, g, scale=True):
    """The lines of GRPOTrainer._generate_and_score_completions (sum_then_normalize, scale_rewards='group')."""
    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    adv = rewards - mean
    return adv / (std + 1e-4) if scale else adv


def test_grpo_source_is_what_we_mirror():
    src = inspect.getsource(GRPOTrainer)
    for line in ("advantages = rewards - mean_grouped_rewards", "advantages = advantages / (std_rewards + 1e-4)",
                 "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
                 "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
                 "loss = (per_token_loss * mask).sum() / normalizer"):
        assert line in src, line
    from trl import GRPOConfig
    assert GRPOConfig.__dataclass_fields__["loss_type"].default == "dapo"
    assert GRPOConfig.__dataclass_fields__["scale_rewards"].default == "group"


@pytest.mark.parametrize("g", [2, 3, 8])
def test_group_advantages_equal_trl(g):
    rng = torch.Generator().manual_seed(9)
    rewards = torch.randn(5 * g, generator=rng, dtype=D)
    rewards[:g] = 1.0  # a tied group: advantages 0
    for scale in (True, False):
        torch.testing.assert_close(ref.group_advantages(rewards, g, scale), _trl_advantages(rewards, g, scale), **TOL)


def test_aggregate_loss_types():
    rng = torch.Generator().manual_seed(10)
    per_tok = torch.randn(4, 7, generator=rng, dtype=D)
    mask = (torch.arange(7)[None] < torch.tensor([1, 7, 3, 5])[:, None]).to(D)
    grpo = ((per_tok * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    dapo = (per_tok * mask).sum() / mask.sum()  # normalizer = num_items_in_batch on one process, no accumulation
    torch.testing.assert_close(ref.aggregate_loss(per_tok, mask, "grpo"), grpo, **TOL)
    torch.testing.assert_close(ref.aggregate_loss(per_tok, mask, "dapo"), dapo, **TOL)
    assert not torch.isclose(grpo, dapo)
