# The first answer cell crashes on an import, so discretize_zoh is never defined: test_discretize fails (2 points);
# nothing else uses it. 18 - 2 = 16 points.
# %% answer id=discretize
from control_systems_toolbox import c2d  # noqa: F401  (no such module)


def discretize_zoh(A, B, dt):
    return c2d(A, B, dt)

# %% answer id=conv_view
def ssm_kernel(Abar, Bbar, C, L):
    K = []
    x = Bbar
    for _ in range(L):
        K.append((C * x).sum())
        x = Abar @ x
    return torch.stack(K)


def causal_conv(K, u):
    L = u.shape[-1]
    T = torch.zeros(L, L, dtype=K.dtype)
    for t in range(L):
        T[t, : t + 1] = K[: t + 1].flip(0)
    return u @ T.T

# %% answer id=selective_scan
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    if delta_bias is not None:
        delta = delta + delta_bias.reshape(1, -1, 1)
    delta = torch.log1p(torch.exp(-delta.abs())) + delta.clamp(min=0)  # a stable softplus
    b, d, L = u.shape
    x = torch.zeros(b, d, A.shape[1], dtype=u.dtype)
    y = torch.empty_like(u)
    for t in range(L):
        dt = delta[:, :, t].unsqueeze(-1)
        x = torch.exp(dt * A) * x + dt * B[:, :, t].unsqueeze(1) * u[:, :, t].unsqueeze(-1)
        y[:, :, t] = torch.einsum("bdn,bn->bd", x, C[:, :, t])
    if D is not None:
        y = y + D.reshape(1, -1, 1) * u
    if z is not None:
        y = y * F.silu(z)
    return y, x

# %% answer id=parallel_scan
def parallel_scan(a, b):
    # Blelloch-style: up-sweep on pairs, recurse on the half-length problem, then fill in the odd positions
    L = b.shape[-1]
    if L == 1:
        return b.clone()
    even = L - L % 2
    a_pair = a[..., 1:even:2] * a[..., 0:even:2]
    b_pair = a[..., 1:even:2] * b[..., 0:even:2] + b[..., 1:even:2]
    odd_prefix = parallel_scan(a_pair, b_pair)  # x at positions 1, 3, 5, ...
    out = torch.empty_like(b)
    out[..., 1:even:2] = odd_prefix
    out[..., 0] = b[..., 0]
    out[..., 2::2] = a[..., 2::2] * odd_prefix[..., : (L - 1) // 2] + b[..., 2::2]
    return out

# %% answer id=mixer
def mamba_mixer(x, sd):
    d, n = sd["A_log"].shape
    rank, k = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[-1]
    L = x.shape[1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, z = xz[:, :d], xz[:, d:]
    h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L])
    dt, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    delta = F.linear(dt, sd["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(sd["A_log"])
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"])
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% answer id=memory
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    inner = int(cfg["expand"] * cfg["hidden_size"])
    conv = inner * cfg["conv_kernel"]
    ssm = inner * cfg["state_size"]
    return (conv + ssm) * cfg["num_hidden_layers"] * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return capacity.kv_bytes_per_token(cfg, bytes_per_value) * context * batch
