# Partial, with plausible mistakes. Expected 7 of 19:
# - router: no renormalisation after the top-k (visible test: the kept weights must sum to 1): 0 of 3;
# - sparse MoE: right in itself but built on that router, so its weights are too small: 0 of 4;
# - capacity: int() rounds 2.5 slots down to 2 (0 of 2); dispatch right, per group, dropped counted (2 of 2);
# - load-balancing loss on counts of tokens, not fractions (grows with the batch): 0 of 3; z-loss right (1 of 1);
# - DeepSeekMoE right (he did not reuse his router: no renormalisation there is what DeepSeek-V2 does): 4 of 4.
# %% answer id=router
def route(logits, k):
    probs = torch.softmax(logits, dim=-1)
    return torch.topk(probs, k, dim=-1)

# %% answer id=moe_forward
def sparse_moe(x, sd, top_k):
    flat = x.reshape(-1, x.shape[-1])
    weights, idx = route(flat @ sd["gate.weight"].T, top_k)
    I = sd["experts.down_proj"].shape[-1]
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(top_k):
            e = int(idx[t, j])
            h = sd["experts.gate_up_proj"][e] @ flat[t]
            out[t] += weights[t, j] * (sd["experts.down_proj"][e] @ (F.silu(h[:I]) * h[I:]))
    return out.reshape(x.shape)

# %% answer id=capacity
def expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1):
    return int(top_k * capacity_factor * num_tokens / num_experts)


def dispatch_top1(expert_index, num_experts, capacity):
    kept = torch.ones_like(expert_index, dtype=torch.bool)
    for g in range(expert_index.shape[0]):
        seen = {}
        for t in range(expert_index.shape[1]):
            e = int(expert_index[g, t])
            seen[e] = seen.get(e, 0) + 1
            if seen[e] > capacity:
                kept[g, t] = False
    return kept, int((~kept).sum())

# %% answer id=losses
def load_balancing_loss(router_logits, top_k):
    n = router_logits.shape[-1]
    probs = torch.softmax(router_logits, dim=-1)
    idx = torch.topk(probs, top_k, dim=-1).indices
    counts = torch.bincount(idx.flatten(), minlength=n).to(probs.dtype)
    return n * (counts * probs.mean(0)).sum()


def router_z_loss(router_logits):
    return torch.logsumexp(router_logits, dim=-1).pow(2).mean()

# %% answer id=shared_experts
def deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0):
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(flat @ sd["gate.weight"].T, dim=-1)
    w, idx = torch.topk(probs, top_k, dim=-1)
    I = sd["experts.down_proj"].shape[-1]
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(top_k):
            e = int(idx[t, j])
            h = sd["experts.gate_up_proj"][e] @ flat[t]
            out[t] += routed_scaling_factor * w[t, j] * (sd["experts.down_proj"][e] @ (F.silu(h[:I]) * h[I:]))
    s = F.silu(flat @ sd["shared_experts.gate_proj.weight"].T) * (flat @ sd["shared_experts.up_proj.weight"].T)
    return (out + s @ sd["shared_experts.down_proj.weight"].T).reshape(x.shape)
