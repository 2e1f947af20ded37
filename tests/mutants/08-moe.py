# Plausible mistakes for 08-moe (see tests/test_mutants.py for the format), and correct answers written
# differently. Every mutant below is also caught by a *visible* test of the cell it names (checked by running it
# against the release notebook's tests, hidden blocks stripped), except where a note says otherwise.

# %% mutant name=no_renormalisation cell=router fails=test_router
replace return top / top.sum(dim=-1, keepdim=True), idx => return top, idx

# %% mutant name=topk_over_tokens cell=router fails=test_router
replace top, idx = torch.topk(probs, k, dim=-1) => top, idx = torch.topk(probs, k, dim=0)

# %% mutant name=softmax_over_tokens cell=router fails=test_router
replace probs = torch.softmax(logits, dim=-1) => probs = torch.softmax(logits, dim=0)

# %% variant name=softmax_of_kept_logits cell=router
def route(logits, k):
    # top-k of the logits (softmax is monotone), then a softmax over the kept ones: the same weights
    kept, idx = logits.topk(k)
    return kept.softmax(-1), idx

# %% mutant name=moe_without_renormalisation cell=moe_forward fails=test_moe_forward
replace weights, idx = route(flat @ sd["gate.weight"].T, top_k) => idx = route(flat @ sd["gate.weight"].T, top_k)[1]
replace <<<
    inter = down.shape[-1]
===
    inter = down.shape[-1]
    weights = torch.softmax(flat @ sd["gate.weight"].T, -1).gather(1, idx)
>>>

# %% mutant name=gate_and_up_swapped cell=moe_forward fails=test_moe_forward
replace y = (F.silu(h[:, :inter]) * h[:, inter:]) @ down[e].T => y = (F.silu(h[:, inter:]) * h[:, :inter]) @ down[e].T

# %% mutant name=router_weight_not_transposed cell=moe_forward fails=test_moe_forward
# logits from the experts' point of view: (E, H) @ (H, T) then read as (T, E) — the shapes only agree when T = E
replace weights, idx = route(flat @ sd["gate.weight"].T, top_k) => weights, idx = route((sd["gate.weight"] @ flat.T).reshape(-1, sd["gate.weight"].shape[0]), top_k)

# %% variant name=dense_then_mask cell=moe_forward
def sparse_moe(x, sd, top_k):
    # a sparse layer written with a (T, E) weight matrix and gathers per expert, no index_add
    T = x.reshape(-1, x.shape[-1])
    w, i = route(T @ sd["gate.weight"].t(), top_k)
    W = torch.zeros(T.shape[0], sd["gate.weight"].shape[0], dtype=T.dtype).scatter(1, i, w)
    out = torch.zeros_like(T)
    for e, (gu, dn) in enumerate(zip(sd["experts.gate_up_proj"], sd["experts.down_proj"], strict=True)):
        rows = W[:, e].nonzero().flatten()
        if rows.numel():
            g, u = (T[rows] @ gu.t()).chunk(2, dim=-1)
            out[rows] += W[rows, e, None] * ((g * torch.sigmoid(g) * u) @ dn.t())
    return out.view_as(x)

# %% mutant name=capacity_rounded_down cell=capacity fails=test_capacity
replace return math.ceil(top_k * capacity_factor * num_tokens / num_experts) => return math.floor(top_k * capacity_factor * num_tokens / num_experts)

# %% mutant name=capacity_rounded_to_nearest cell=capacity fails=test_capacity
replace return math.ceil(top_k * capacity_factor * num_tokens / num_experts) => return round(top_k * capacity_factor * num_tokens / num_experts)

# %% mutant name=capacity_ignores_top_k cell=capacity fails=test_capacity
replace return math.ceil(top_k * capacity_factor * num_tokens / num_experts) => return math.ceil(capacity_factor * num_tokens / num_experts)

# %% mutant name=dropped_not_counted cell=capacity fails=test_dispatch
replace return kept, int((~kept).sum()) => return kept, 0

# %% mutant name=capacity_over_the_whole_batch cell=capacity fails=test_dispatch
# one buffer for all groups instead of one per group
replace <<<
    arrival = (torch.cumsum(onehot, dim=-2) * onehot).sum(-1)  # 1 for the first token at its expert, 2 ...
===
    arrival = (torch.cumsum(onehot.reshape(-1, num_experts), 0) * onehot.reshape(-1, num_experts)).sum(-1)
    arrival = arrival.reshape(expert_index.shape)
>>>

# %% mutant name=strict_capacity_off_by_one cell=capacity fails=test_dispatch
replace kept = arrival <= capacity => kept = arrival < capacity

# %% variant name=loop_and_integer_ceil cell=capacity
def expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1):
    slots = top_k * capacity_factor * num_tokens / num_experts
    whole = int(slots)
    return whole if whole == slots else whole + 1


def dispatch_top1(expert_index, num_experts, capacity):
    kept = torch.zeros(expert_index.shape, dtype=torch.bool)
    dropped = 0
    for g, row in enumerate(expert_index.tolist()):
        used = [0] * num_experts
        for t, e in enumerate(row):
            if used[e] < capacity:
                used[e] += 1
                kept[g, t] = True
            else:
                dropped += 1
    return kept, dropped

# %% mutant name=aux_loss_on_counts cell=losses fails=test_aux_loss
replace f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0) / T => f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0)

# %% mutant name=aux_loss_soft_fractions cell=losses fails=test_aux_loss
# f from the probabilities instead of the top-k choices: N·Σ P_i², minimised by uniform probabilities
replace f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0) / T => f = probs.mean(0)

# %% mutant name=aux_loss_top1_only cell=losses fails=test_aux_loss
replace chosen = torch.topk(probs, top_k, dim=-1).indices => chosen = torch.topk(probs, 1, dim=-1).indices

# %% mutant name=aux_loss_divided_by_k cell=losses fails=test_aux_loss
# Switch's normalisation (f sums to 1) applied to top-k: perfectly balanced top-2 gives 1, transformers gives 2
replace f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0) / T => f = F.one_hot(chosen, n).sum(dim=1).to(probs.dtype).sum(0) / (T * top_k)

# %% mutant name=z_loss_not_squared cell=losses fails=test_z_loss
replace return (torch.logsumexp(router_logits, dim=-1) ** 2).mean() => return torch.logsumexp(router_logits, dim=-1).mean()

# %% mutant name=z_loss_summed cell=losses fails=test_z_loss
replace return (torch.logsumexp(router_logits, dim=-1) ** 2).mean() => return (torch.logsumexp(router_logits, dim=-1) ** 2).sum()

# %% variant name=bincount_and_manual_logsumexp cell=losses
def load_balancing_loss(router_logits, top_k):
    n = router_logits.shape[-1]
    p = router_logits.softmax(-1)
    picks = p.argsort(dim=-1, descending=True)[:, :top_k].reshape(-1)
    frac = torch.bincount(picks, minlength=n).to(p.dtype) / router_logits.shape[0]
    return n * (frac @ p.mean(dim=0))


def router_z_loss(router_logits):
    m = router_logits.amax(dim=-1, keepdim=True)
    lse = m.squeeze(-1) + (router_logits - m).exp().sum(-1).log()
    return lse.square().sum() / lse.numel()

# %% mutant name=deepseek_renormalised cell=shared_experts fails=test_shared_experts
replace weights = weights * routed_scaling_factor => weights = weights / weights.sum(-1, keepdim=True) * routed_scaling_factor

# %% mutant name=deepseek_without_shared cell=shared_experts fails=test_shared_experts
replace out = out + shared @ sd["shared_experts.down_proj.weight"].T => out = out

# %% mutant name=deepseek_scale_ignored cell=shared_experts fails=test_shared_experts
# the visible test uses scale 1: the hidden test catches it
replace weights = weights * routed_scaling_factor => weights = weights

# %% variant name=per_token_loop cell=shared_experts
def deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0):
    def swiglu(v, gu, dn):
        g, u = (gu @ v).chunk(2)
        return dn @ (F.silu(g) * u)

    gu_s = torch.cat([sd["shared_experts.gate_proj.weight"], sd["shared_experts.up_proj.weight"]])
    rows = []
    for v in x.reshape(-1, x.shape[-1]):
        p = F.softmax(sd["gate.weight"] @ v, dim=0)
        val, ids = p.topk(top_k)
        y = swiglu(v, gu_s, sd["shared_experts.down_proj.weight"])
        for w, e in zip(val, ids.tolist(), strict=True):
            y = y + routed_scaling_factor * w * swiglu(v, sd["experts.gate_up_proj"][e], sd["experts.down_proj"][e])
        rows.append(y)
    return torch.stack(rows).reshape(x.shape)
