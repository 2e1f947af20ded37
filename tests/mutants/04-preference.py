# Plausible mistakes for 04-preference (see tests/test_mutants.py for the format).

# %% mutant name=logps_no_shift cell=sequence_logps fails=test_sequence_logps
replace <<<
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
===
    logp = torch.log_softmax(logits, dim=-1)
    tok = logp.gather(-1, input_ids.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask.to(logp.dtype)
    total = (tok * mask).sum(-1)
>>>

# %% mutant name=logps_prompt_not_masked cell=sequence_logps fails=test_sequence_logps
replace <<<
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
===
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    # scores every token up to the end of the completion, prompt included
    last = completion_mask.cumsum(-1).argmax(-1)
    mask = (torch.arange(tok.shape[1])[None, :] < last[:, None]).to(tok.dtype)
    total = (tok * mask).sum(-1)
>>>

# %% mutant name=logps_mask_not_shifted cell=sequence_logps fails=test_sequence_logps
replace <<<
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
===
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, :-1].to(tok.dtype)
    total = (tok * mask).sum(-1)
>>>

# %% mutant name=logps_average_ignored cell=sequence_logps fails=test_sequence_logps
replace <<<
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
    return total / mask.sum(-1) if average else total
===
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * completion_mask[:, 1:]).sum(-1)
>>>

# %% mutant name=logps_mean_over_padded_length cell=sequence_logps fails=test_sequence_logps
replace <<<
    """Summed (or, with average=True, mean) log-probability of the completion tokens of each row."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logp.dtype)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    total = tok.sum(-1)
    return total / mask.sum(-1) if average else total
===
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * completion_mask[:, 1:]
    return tok.mean(-1) if average else tok.sum(-1)
>>>

# %% mutant name=dpo_averaged_logps cell=dpo_loss fails=test_dpo_loss
delete """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
replace return (tok * mask).sum(-1) => return (tok * mask).sum(-1) / mask.sum(-1)
replace chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask) => c = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask)
replace rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask) => r = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask)
delete loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
replace return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach() => return -F.logsigmoid(beta * (c - r)).mean(), beta * c.detach(), beta * r.detach()

# %% mutant name=dpo_sign_flipped cell=dpo_loss fails=test_dpo_loss
replace <<<
    """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
    def seq(tok, mask):
        return (tok * mask).sum(-1)

    chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask)
    rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
===
    c = (chosen * chosen_mask).sum(-1) - (ref_chosen.detach() * chosen_mask).sum(-1)
    r = (rejected * rejected_mask).sum(-1) - (ref_rejected.detach() * rejected_mask).sum(-1)
    return -F.logsigmoid(beta * (r - c)).mean(), beta * c.detach(), beta * r.detach()
>>>

# %% mutant name=dpo_missing_beta cell=dpo_loss fails=test_dpo_loss
replace <<<
    """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
    def seq(tok, mask):
        return (tok * mask).sum(-1)

    chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask)
    rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
===
    c = (chosen * chosen_mask).sum(-1) - (ref_chosen.detach() * chosen_mask).sum(-1)
    r = (rejected * rejected_mask).sum(-1) - (ref_rejected.detach() * rejected_mask).sum(-1)
    return -F.logsigmoid(c - r).mean(), beta * c.detach(), beta * r.detach()
>>>

# %% mutant name=dpo_reference_not_frozen cell=dpo_loss fails=test_dpo_frozen_reference
replace <<<
    """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
    def seq(tok, mask):
        return (tok * mask).sum(-1)

    chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask)
    rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
===
    c = (chosen * chosen_mask).sum(-1) - (ref_chosen * chosen_mask).sum(-1)
    r = (rejected * rejected_mask).sum(-1) - (ref_rejected * rejected_mask).sum(-1)
    return -F.logsigmoid(beta * (c - r)).mean(), beta * c.detach(), beta * r.detach()
>>>

# %% mutant name=dpo_rewards_without_beta cell=dpo_loss fails=test_dpo_loss
replace <<<
    """DPO loss (mean over pairs) and the detached implicit rewards of chosen and rejected completions."""
    def seq(tok, mask):
        return (tok * mask).sum(-1)

===
>>>
replace chosen_ratio = seq(chosen, chosen_mask) - seq(ref_chosen.detach(), chosen_mask) => c = (chosen * chosen_mask).sum(-1) - (ref_chosen.detach() * chosen_mask).sum(-1)
replace rejected_ratio = seq(rejected, rejected_mask) - seq(ref_rejected.detach(), rejected_mask) => r = (rejected * rejected_mask).sum(-1) - (ref_rejected.detach() * rejected_mask).sum(-1)
replace <<<
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
===
    return -F.logsigmoid(beta * (c - r)).mean(), c.detach(), r.detach()
>>>

# %% mutant name=simpo_summed_logps cell=simpo_loss fails=test_simpo_loss
replace <<<
    """SimPO loss (mean over pairs) and the detached rewards beta * average log-prob."""
    c = (chosen * chosen_mask).sum(-1) / chosen_mask.sum(-1)
    r = (rejected * rejected_mask).sum(-1) / rejected_mask.sum(-1)
    loss = -F.logsigmoid(beta * (c - r) - gamma).mean()
    return loss, beta * c.detach(), beta * r.detach()
===
    c = (chosen * chosen_mask).sum(-1)
    r = (rejected * rejected_mask).sum(-1)
    return -F.logsigmoid(beta * (c - r) - gamma).mean(), beta * c.detach(), beta * r.detach()
>>>

# %% mutant name=simpo_gamma_inside_beta cell=simpo_loss fails=test_simpo_loss
delete """SimPO loss (mean over pairs) and the detached rewards beta * average log-prob."""
delete loss = -F.logsigmoid(beta * (c - r) - gamma).mean()
replace return loss, beta * c.detach(), beta * r.detach() => return -F.logsigmoid(beta * (c - r - gamma)).mean(), beta * c.detach(), beta * r.detach()

# %% mutant name=simpo_missing_beta cell=simpo_loss fails=test_simpo_loss
delete """SimPO loss (mean over pairs) and the detached rewards beta * average log-prob."""
delete loss = -F.logsigmoid(beta * (c - r) - gamma).mean()
replace return loss, beta * c.detach(), beta * r.detach() => return -F.logsigmoid(c - r - gamma).mean(), beta * c.detach(), beta * r.detach()

# %% mutant name=orpo_summed_logps cell=orpo_loss fails=test_orpo_loss
delete """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
delete """ORPO loss: NLL of the chosen tokens - lam * mean log sigmoid(log odds ratio); also the log odds."""
replace c = (chosen * chosen_mask).sum(-1) / chosen_mask.sum(-1) => c = (chosen * chosen_mask).sum(-1)
replace r = (rejected * rejected_mask).sum(-1) / rejected_mask.sum(-1) => r = (rejected * rejected_mask).sum(-1)

# %% mutant name=orpo_naive_log1mexp cell=orpo_loss fails=test_log1mexp,test_orpo_loss
replace <<<
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
===
    return torch.log(1 - torch.exp(x))
>>>
delete """ORPO loss: NLL of the chosen tokens - lam * mean log sigmoid(log odds ratio); also the log odds."""

# %% mutant name=orpo_plus_instead_of_minus cell=orpo_loss fails=test_orpo_loss
delete """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
delete """ORPO loss: NLL of the chosen tokens - lam * mean log sigmoid(log odds ratio); also the log odds."""
replace return nll - lam * F.logsigmoid(log_odds).mean(), log_odds => return nll + lam * F.logsigmoid(log_odds).mean(), log_odds

# %% mutant name=kto_reference_point_not_detached cell=kto_loss fails=test_kto_detached
delete """KTO loss over a batch of unpaired examples, and the reference point z."""
replace z = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach() => z = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0)
replace r = policy_logps - ref_logps.detach() => r = policy_logps - ref_logps

# %% mutant name=kto_no_clamp cell=kto_loss fails=test_kto_loss
delete """KTO loss over a batch of unpaired examples, and the reference point z."""
replace z = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach() => z = (policy_kl_logps - ref_kl_logps).mean().detach()
replace r = policy_logps - ref_logps.detach() => r = policy_logps - ref_logps

# %% mutant name=kto_weights_swapped cell=kto_loss fails=test_kto_loss
delete """KTO loss over a batch of unpaired examples, and the reference point z."""
replace r = policy_logps - ref_logps.detach() => r = policy_logps - ref_logps
replace good = desirable_weight * (1 - torch.sigmoid(beta * (r[labels] - z))) => good = undesirable_weight * (1 - torch.sigmoid(beta * (r[labels] - z)))
replace bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - r[~labels]))) => bad = desirable_weight * (1 - torch.sigmoid(beta * (z - r[~labels])))

# %% mutant name=kto_undesirable_sign_flipped cell=kto_loss fails=test_kto_loss
delete """KTO loss over a batch of unpaired examples, and the reference point z."""
replace r = policy_logps - ref_logps.detach() => r = policy_logps - ref_logps
replace bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - r[~labels]))) => bad = undesirable_weight * (1 - torch.sigmoid(beta * (r[~labels] - z)))

# %% mutant name=grpo_biased_std cell=grpo fails=test_group_advantages
delete """(r - group mean) / (group std + 1e-4), flat like rewards."""
replace adv = adv / (g.std(dim=1, keepdim=True) + 1e-4) => adv = adv / (g.std(dim=1, keepdim=True, unbiased=False) + 1e-4)
delete """Reduce a (B, T) per-token loss with GRPO's or DAPO's normalisation."""
delete mask = mask.to(per_token_loss.dtype)

# %% mutant name=grpo_batch_not_group cell=grpo fails=test_group_advantages
replace <<<
    """(r - group mean) / (group std + 1e-4), flat like rewards."""
    g = rewards.view(-1, num_generations)
    adv = g - g.mean(dim=1, keepdim=True)
===
    adv = rewards - rewards.mean()
>>>
replace adv = adv / (g.std(dim=1, keepdim=True) + 1e-4) => adv = adv / (rewards.std() + 1e-4)
replace return adv.reshape(-1) => return adv
delete """Reduce a (B, T) per-token loss with GRPO's or DAPO's normalisation."""
delete mask = mask.to(per_token_loss.dtype)

# %% mutant name=dapo_as_grpo cell=grpo fails=test_aggregate_loss
delete """(r - group mean) / (group std + 1e-4), flat like rewards."""
delete """Reduce a (B, T) per-token loss with GRPO's or DAPO's normalisation."""
delete mask = mask.to(per_token_loss.dtype)
replace if loss_type == "grpo": => if loss_type in ("grpo", "dapo"):
delete if loss_type == "dapo":
delete return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)

# %% variant name=variant_logps_cross_entropy cell=sequence_logps
def sequence_logps(logits, input_ids, completion_mask, average=False):
    b, L, v = logits.shape
    labels = input_ids.masked_fill(completion_mask == 0, -100)[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels.reshape(-1), ignore_index=-100,
                          reduction="none").view(b, L - 1)
    out = -nll.sum(-1)
    if average:
        out = out / (labels != -100).sum(-1)
    return out

# %% variant name=variant_dpo_no_grad_and_softplus cell=dpo_loss
def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1):
    with torch.no_grad():
        ref_margin = (ref_chosen * chosen_mask).sum(1) - (ref_rejected * rejected_mask).sum(1)
        rc = beta * ((chosen * chosen_mask).sum(1) - (ref_chosen * chosen_mask).sum(1))
        rr = beta * ((rejected * rejected_mask).sum(1) - (ref_rejected * rejected_mask).sum(1))
    margin = (chosen * chosen_mask).sum(1) - (rejected * rejected_mask).sum(1) - ref_margin
    return F.softplus(-beta * margin).mean(), rc, rr

# %% variant name=variant_simpo_gamma_over_beta cell=simpo_loss
def simpo_loss(chosen, rejected, chosen_mask, rejected_mask, beta=2.0, gamma=0.5):
    c = (chosen * chosen_mask).sum(1) / chosen_mask.sum(1)
    r = (rejected * rejected_mask).sum(1) / rejected_mask.sum(1)
    logits = c - r - gamma / beta
    return torch.mean(-F.logsigmoid(beta * logits)), (beta * c).detach(), (beta * r).detach()

# %% variant name=variant_orpo_log1p_branch cell=orpo_loss
def log1mexp(x):
    out = torch.empty_like(x)
    near = x > -0.6931471805599453
    out[near] = torch.log(-torch.expm1(x[near]))
    out[~near] = torch.log1p(-torch.exp(x[~near]))
    return out


def orpo_loss(chosen, rejected, chosen_mask, rejected_mask, lam=0.1):
    ac = (chosen * chosen_mask).sum(1) / chosen_mask.sum(1)
    ar = (rejected * rejected_mask).sum(1) / rejected_mask.sum(1)
    odds = ac - ar - log1mexp(ac) + log1mexp(ar)
    return -(chosen[chosen_mask.bool()]).mean() - lam * F.logsigmoid(odds).mean(), odds

# %% variant name=variant_kto_loop cell=kto_loss
def kto_loss(policy_logps, ref_logps, labels, policy_kl_logps, ref_kl_logps, beta=0.1,
             desirable_weight=1.0, undesirable_weight=1.0):
    with torch.no_grad():
        z = torch.clamp((policy_kl_logps - ref_kl_logps).mean(), min=0.0)
    losses = []
    for lp, rl, good in zip(policy_logps, ref_logps, labels):
        r = lp - rl
        if bool(good):
            losses.append(desirable_weight * (1 - torch.sigmoid(beta * (r - z))))
        else:
            losses.append(undesirable_weight * (1 - torch.sigmoid(beta * (z - r))))
    return torch.stack(losses).mean(), z

# %% variant name=variant_grpo_manual_std cell=grpo
def group_advantages(rewards, num_generations, scale=True):
    out = []
    for group in rewards.split(num_generations):
        centred = group - group.sum() / len(group)
        if scale:
            std = ((centred ** 2).sum() / (len(group) - 1)).sqrt()
            centred = centred / (std + 1e-4)
        out.append(centred)
    return torch.cat(out)


def aggregate_loss(per_token_loss, mask, loss_type="dapo"):
    m = mask.to(per_token_loss.dtype)
    if loss_type == "dapo":
        return (per_token_loss * m).sum() / m.sum()
    if loss_type == "grpo":
        per_seq = (per_token_loss * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1)
        return per_seq.mean()
    raise ValueError(f"unknown {loss_type}")

# %% mutant name=dpo_log_of_sigmoid cell=dpo_loss fails=test_dpo_loss
replace loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean() => loss = -torch.log(torch.sigmoid(beta * (chosen_ratio - rejected_ratio))).mean()

# %% mutant name=simpo_log_of_sigmoid cell=simpo_loss fails=test_simpo_loss
replace loss = -F.logsigmoid(beta * (c - r) - gamma).mean() => loss = -torch.log(torch.sigmoid(beta * (c - r) - gamma)).mean()
