# Partial. Expected 7 of 18: discretisation right (2), kernel off by one (0 of 2), B-bar = B in the scan (0 of 4,
# and the mixer built on it fails too: 0 of 4), parallel scan right (3), state bytes right (2), KV cache with
# query heads of full width (0 of 1).
# %% answer id=discretize
def discretize_zoh(A, B, dt):
    Abar = torch.matrix_exp(A * dt)
    I = torch.eye(len(A), dtype=A.dtype)
    return Abar, torch.linalg.inv(A) @ (Abar - I) @ B

# %% answer id=conv_view
def ssm_kernel(Abar, Bbar, C, L):
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k + 1) @ Bbar for k in range(L)])


def causal_conv(K, u):
    L = u.shape[-1]
    y = F.conv1d(F.pad(u.reshape(-1, 1, L), (L - 1, 0)), K.flip(0).reshape(1, 1, -1))
    return y.reshape(u.shape)

# %% answer id=selective_scan
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    delta = F.softplus(delta)
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(delta[:, :, t, None] * A) * x + B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x

# %% answer id=parallel_scan
def parallel_scan(a, b):
    L = b.shape[-1]
    step = 1
    while step < L:
        shifted_b = F.pad(b[..., :-step], (step, 0))
        shifted_a = F.pad(a[..., :-step], (step, 0), value=1.0)
        b = a * shifted_b + b
        a = a * shifted_a
        step *= 2
    return b

# %% answer id=mixer
# Right, but it calls the wrong selective_scan above.
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
    d = cfg["expand"] * cfg["hidden_size"]
    return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return 2 * cfg["num_hidden_layers"] * cfg["hidden_size"] * context * batch * bytes_per_value
