"""Instructor reference for week 04-preference: preference-optimisation losses on log-probabilities.

Each function equals TRL 1.16's implementation on the same log-probs (tests/test_preference.py checks it):
``CPOTrainer.get_batch_logps`` (sequence log-probs), ``DPOTrainer._compute_loss`` (loss_type "sigmoid"),
``CPOTrainer.cpo_loss`` (loss_type "simpo", cpo_alpha=0), ``ORPOTrainer.odds_ratio_loss`` plus the chosen NLL,
``KTOTrainer._compute_loss`` (loss_type "kto") and the advantage / loss aggregation code of ``GRPOTrainer``.
Per-token log-prob tensors are ``(batch, T)``; masks are 1 on completion tokens, 0 on prompt and padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logps(logits, input_ids, completion_mask, average=False):
    """Log-probability of each completion given its prompt: ``(batch,)``.

    ``logits`` ``(B, L, V)`` predicts token t+1 at position t; ``completion_mask`` ``(B, L)`` marks the tokens of
    ``input_ids`` that belong to the completion. Summed over completion tokens, or their mean if ``average``.
    """
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
    return total / mask.sum(-1) if average else total


def _sum(tok, mask):
    return (tok * mask).sum(-1)


def _avg(tok, mask):
    return (tok * mask).sum(-1) / mask.sum(-1)


def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1):
    """DPO: mean of −log σ(β[(log π_w − log π_ref,w) − (log π_l − log π_ref,l)]) with summed log-probs.

    Returns ``(loss, chosen_rewards, rejected_rewards)``; the rewards β·(log π − log π_ref) are detached and
    no gradient reaches the reference log-probs.
    """
    c = _sum(chosen, chosen_mask) - _sum(ref_chosen.detach(), chosen_mask)
    r = _sum(rejected, rejected_mask) - _sum(ref_rejected.detach(), rejected_mask)
    loss = -F.logsigmoid(beta * (c - r)).mean()
    return loss, beta * c.detach(), beta * r.detach()


def simpo_loss(chosen, rejected, chosen_mask, rejected_mask, beta=2.0, gamma=0.5):
    """SimPO: mean of −log σ(β·avg log π_w − β·avg log π_l − γ); no reference model.

    Returns ``(loss, chosen_rewards, rejected_rewards)`` with rewards β·avg log π (detached).
    """
    c, r = _avg(chosen, chosen_mask), _avg(rejected, rejected_mask)
    loss = -F.logsigmoid(beta * (c - r) - gamma).mean()
    return loss, beta * c.detach(), beta * r.detach()


def log1mexp(x):
    """log(1 − eˣ) for x < 0, stable at both ends (Mächler 2012)."""
    return torch.where(x > -0.693147, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(chosen, rejected, chosen_mask, rejected_mask, lam=0.1):
    """ORPO: NLL of the chosen tokens − λ · mean log σ(log odds ratio) on length-averaged log-probs.

    The NLL is the mean over all chosen completion tokens of the batch (as ``CrossEntropyLoss``).
    Returns ``(loss, log_odds)``, ``log_odds`` per pair.
    """
    nll = -(chosen * chosen_mask).sum() / chosen_mask.sum()
    c, r = _avg(chosen, chosen_mask), _avg(rejected, rejected_mask)
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return nll - lam * F.logsigmoid(log_odds).mean(), log_odds


def kto_loss(policy_logps, ref_logps, labels, policy_kl_logps, ref_kl_logps, beta=0.1,
             desirable_weight=1.0, undesirable_weight=1.0):
    """KTO with summed sequence log-probs of unpaired examples (``labels`` True = desirable).

    Reference point z = max(0, mean(policy_kl_logps − ref_kl_logps)), detached. Desirable loss
    1 − σ(β(r − z)), undesirable 1 − σ(β(z − r)), r = log π − log π_ref; weighted, then averaged over all examples.
    Returns ``(loss, z)``.
    """
    labels = torch.as_tensor(labels, dtype=torch.bool)
    z = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()
    ratio = policy_logps - ref_logps.detach()
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio[labels] - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio[~labels])))
    return torch.cat([good, bad]).nanmean(), z


def group_advantages(rewards, num_generations, scale=True):
    """GRPO advantages: (r − group mean) / (group std + 1e-4), std with Bessel's correction.

    ``rewards`` is flat, groups of ``num_generations`` consecutive completions of the same prompt.
    ``scale=False`` only centres (TRL's ``scale_rewards="none"``).
    """
    g = rewards.view(-1, num_generations)
    adv = (g - g.mean(dim=1, keepdim=True))
    if scale:
        adv = adv / (g.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


def aggregate_loss(per_token_loss, mask, loss_type="dapo"):
    """Reduce a ``(B, T)`` per-token policy loss to a scalar.

    "grpo": mean over each sequence's tokens, then over sequences (long answers weigh as much as short ones);
    "dapo" (TRL's default): sum over every completion token of the batch divided by their number.
    """
    mask = mask.to(per_token_loss.dtype)
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dapo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")
