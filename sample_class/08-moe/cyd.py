# The capacity cell crashes on an import, so expert_capacity and dispatch_top1 are never defined:
# test_capacity (2) and test_dispatch (2) fail; nothing else uses them. 19 - 4 = 15 points.
# %% answer id=router
def route(logits, k):
    idx = logits.argsort(dim=-1, descending=True)[:, :k]
    kept = logits.gather(-1, idx)
    e = torch.exp(kept - kept[:, :1])
    return e / e.sum(-1, keepdim=True), idx

# %% answer id=moe_forward
def sparse_moe(x, sd, top_k):
    flat = x.reshape(-1, x.shape[-1])
    w, idx = route(flat @ sd["gate.weight"].T, top_k)
    gu, dn = sd["experts.gate_up_proj"], sd["experts.down_proj"]
    out = torch.zeros_like(flat)
    for e in range(gu.shape[0]):
        hit = (idx == e)
        rows = hit.any(-1).nonzero().flatten()
        if len(rows) == 0:
            continue
        g, u = (flat[rows] @ gu[e].T).chunk(2, -1)
        out[rows] += (w * hit)[rows].sum(-1, keepdim=True) * ((F.silu(g) * u) @ dn[e].T)
    return out.reshape(x.shape)

# %% answer id=capacity
from switch_capacity import ceil_capacity  # noqa: F401  (no such module)


def expert_capacity(num_tokens, num_experts, capacity_factor, top_k=1):
    return ceil_capacity(num_tokens, num_experts, capacity_factor, top_k)


def dispatch_top1(expert_index, num_experts, capacity):
    return None, 0

# %% answer id=losses
def load_balancing_loss(router_logits, top_k):
    T, N = router_logits.shape
    p = router_logits.softmax(-1)
    f = torch.zeros(N, dtype=p.dtype)
    for row in p.topk(top_k, -1).indices:
        f[row] += 1.0 / T
    return N * torch.dot(f, p.mean(0))


def router_z_loss(router_logits):
    return torch.logsumexp(router_logits, -1).square().mean()

# %% answer id=shared_experts
def deepseek_moe(x, sd, top_k, routed_scaling_factor=1.0):
    flat = x.reshape(-1, x.shape[-1])
    val, idx = torch.softmax(flat @ sd["gate.weight"].T, -1).topk(top_k, -1)
    gu, dn = sd["experts.gate_up_proj"], sd["experts.down_proj"]
    out = torch.zeros_like(flat)
    for e in range(gu.shape[0]):
        hit = (idx == e)
        rows = hit.any(-1).nonzero().flatten()
        if len(rows):
            g, u = (flat[rows] @ gu[e].T).chunk(2, -1)
            out[rows] += routed_scaling_factor * (val * hit)[rows].sum(-1, keepdim=True) * ((F.silu(g) * u) @ dn[e].T)
    sg = flat @ sd["shared_experts.gate_proj.weight"].T
    su = flat @ sd["shared_experts.up_proj.weight"].T
    return (out + (F.silu(sg) * su) @ sd["shared_experts.down_proj.weight"].T).reshape(x.shape)
