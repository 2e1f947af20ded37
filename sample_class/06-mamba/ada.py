# Complete; every answer written differently from the reference solution: 18 of 18 points.
# %% answer id=discretize
def discretize_zoh(A, B, dt):
    # the augmented matrix exponential exp([[A, B], [0, 0]] dt) = [[Abar, Bbar], [0, I]]
    n = A.shape[0]
    B2 = B.reshape(n, -1)
    M = torch.zeros(n + B2.shape[1], n + B2.shape[1], dtype=A.dtype)
    M[:n, :n], M[:n, n:] = A, B2
    E = torch.linalg.matrix_exp(M * dt)
    return E[:n, :n], E[:n, n:].reshape(B.shape)

# %% answer id=conv_view
def ssm_kernel(Abar, Bbar, C, L):
    powers, v = [], Bbar
    for _ in range(L):
        powers.append(v)
        v = Abar @ v
    return torch.stack(powers) @ C


def causal_conv(K, u):
    L = u.shape[-1]
    size = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=size) * torch.fft.rfft(K, n=size), n=size)
    return y[..., :L]

# %% answer id=selective_scan
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    dt = F.softplus(delta if delta_bias is None else delta + delta_bias.unsqueeze(-1))
    dA = torch.exp(torch.einsum("bdl,dn->bldn", dt, A))
    dBu = torch.einsum("bdl,bnl,bdl->bldn", dt, B, u)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    outs = []
    for t in range(u.shape[2]):
        state = dA[:, t] * state + dBu[:, t]
        outs.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(outs, dim=2)
    y = y if D is None else y + u * D.view(1, -1, 1)
    y = y if z is None else y * z * torch.sigmoid(z)
    return y, state

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
    W_in, W_x = sd["in_proj.weight"], sd["x_proj.weight"]
    d, n = sd["A_log"].shape
    r = sd["dt_proj.weight"].shape[1]
    w = sd["conv1d.weight"][:, 0]  # (d, k)
    k = w.shape[1]
    xz = x @ W_in.T + (sd["in_proj.bias"] if "in_proj.bias" in sd else 0)
    h, z = xz[..., :d], xz[..., d:]  # (b, L, d)
    padded = torch.cat([h.new_zeros(h.shape[0], k - 1, d), h], 1)
    windows = padded.unfold(1, k, 1)  # (b, L, d, k): inputs t-k+1 .. t
    h = F.silu((windows * w).sum(-1) + sd["conv1d.bias"])
    proj = h @ W_x.T
    dt, B, C = proj[..., :r], proj[..., r:r + n], proj[..., r + n:]
    delta = dt @ sd["dt_proj.weight"].T
    y, _ = selective_scan(h.transpose(1, 2), delta.transpose(1, 2), -sd["A_log"].exp(), B.transpose(1, 2),
                          C.transpose(1, 2), sd["D"], z.transpose(1, 2), sd["dt_proj.bias"])
    out = y.transpose(1, 2) @ sd["out_proj.weight"].T
    return out + sd["out_proj.bias"] if "out_proj.bias" in sd else out

# %% answer id=memory
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    inner = int(cfg["expand"] * cfg["hidden_size"])
    conv = inner * cfg["conv_kernel"]
    ssm = inner * cfg["state_size"]
    return (conv + ssm) * cfg["num_hidden_layers"] * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return capacity.kv_bytes_per_token(cfg, bytes_per_value) * context * batch
