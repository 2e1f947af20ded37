# Plausible mistakes for 06-mamba (see tests/test_mutants.py for the format).

# %% mutant name=euler_not_zoh cell=discretize fails=test_discretize
def discretize_zoh(A, B, dt):
    return torch.linalg.matrix_exp(dt * A), dt * B

# %% mutant name=zoh_without_inverse cell=discretize fails=test_discretize
def discretize_zoh(A, B, dt):
    Abar = torch.linalg.matrix_exp(dt * A)
    return Abar, (Abar - torch.eye(A.shape[0], dtype=A.dtype)) @ B

# %% mutant name=van_loan_variant cell=discretize fails=
def discretize_zoh(A, B, dt):
    # the augmented matrix exponential exp([[A, B], [0, 0]] dt) = [[Abar, Bbar], [0, I]]
    n = A.shape[0]
    B2 = B.reshape(n, -1)
    M = torch.zeros(n + B2.shape[1], n + B2.shape[1], dtype=A.dtype)
    M[:n, :n], M[:n, n:] = A, B2
    E = torch.linalg.matrix_exp(M * dt)
    return E[:n, :n], E[:n, n:].reshape(B.shape)

# %% mutant name=conv_not_causal cell=conv_view fails=test_conv_view
def ssm_kernel(Abar, Bbar, C, L):
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k) @ Bbar for k in range(L)])


def causal_conv(K, u):
    L = u.shape[-1]
    flat = u.reshape(-1, 1, L)
    y = F.conv1d(flat, K.flip(0).reshape(1, 1, -1), padding=L // 2)[..., :L]  # centred, sees the future
    return y.reshape(u.shape)

# %% mutant name=kernel_not_flipped cell=conv_view fails=test_conv_view
def ssm_kernel(Abar, Bbar, C, L):
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k) @ Bbar for k in range(L)])


def causal_conv(K, u):
    L = u.shape[-1]
    y = F.conv1d(F.pad(u.reshape(-1, 1, L), (L - 1, 0)), K.reshape(1, 1, -1))  # cross-correlation
    return y.reshape(u.shape)

# %% mutant name=kernel_off_by_one cell=conv_view fails=test_conv_view
def ssm_kernel(Abar, Bbar, C, L):
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k + 1) @ Bbar for k in range(L)])


def causal_conv(K, u):
    L = u.shape[-1]
    y = F.conv1d(F.pad(u.reshape(-1, 1, L), (L - 1, 0)), K.flip(0).reshape(1, 1, -1))
    return y.reshape(u.shape)

# %% mutant name=fft_conv_variant cell=conv_view fails=
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

# %% mutant name=no_softplus cell=selective_scan fails=test_selective_scan,test_mixer
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x

# %% mutant name=bbar_is_b cell=selective_scan fails=test_selective_scan,test_mixer
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

# %% mutant name=bias_after_softplus cell=selective_scan fails=test_selective_scan,test_mixer
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    delta = F.softplus(delta)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x

# %% mutant name=gate_is_sigmoid cell=selective_scan fails=test_selective_scan,test_mixer
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    delta = F.softplus(delta)
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * torch.sigmoid(z)
    return y, x

# %% mutant name=einsum_variant cell=selective_scan fails=
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

# %% mutant name=scan_looks_ahead cell=parallel_scan fails=test_parallel_scan
def parallel_scan(a, b):
    L, s = b.shape[-1], 1
    while s < L:  # combines each position with the one s *after* it
        b = torch.cat([a[..., :-s] * b[..., s:] + b[..., :-s], b[..., -s:]], -1)
        a = torch.cat([a[..., :-s] * a[..., s:], a[..., -s:]], -1)
        s *= 2
    return b

# %% mutant name=scan_wrong_combine cell=parallel_scan fails=test_parallel_scan
def parallel_scan(a, b):
    L, s = b.shape[-1], 1
    while s < L:
        b = torch.cat([b[..., :s], a[..., :-s] * b[..., :-s] + b[..., s:]], -1)  # the earlier a, not the later
        a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1)
        s *= 2
    return b

# %% mutant name=scan_a_not_updated cell=parallel_scan fails=test_parallel_scan
def parallel_scan(a, b):
    L, s = b.shape[-1], 1
    while s < L:
        b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1)
        s *= 2
    return b

# %% mutant name=scan_is_sequential cell=parallel_scan fails=test_parallel_scan
def parallel_scan(a, b):
    out = [b[..., 0]]
    for t in range(1, b.shape[-1]):
        out.append(a[..., t] * out[-1] + b[..., t])
    return torch.stack(out, -1)

# %% mutant name=blelloch_variant cell=parallel_scan fails=
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

# %% mutant name=A_not_negated cell=mixer fails=test_mixer
def mamba_mixer(x, sd):
    d, n = sd["A_log"].shape
    rank, k = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[-1]
    L = x.shape[1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, z = xz[:, :d], xz[:, d:]
    h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L])
    dt, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    delta = F.linear(dt, sd["dt_proj.weight"]).transpose(1, 2)
    A = torch.exp(sd["A_log"])
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"])
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% mutant name=mixer_conv_not_causal cell=mixer fails=test_mixer
def mamba_mixer(x, sd):
    d, n = sd["A_log"].shape
    rank, k = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[-1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, z = xz[:, :d], xz[:, d:]
    h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding="same", groups=d))
    dt, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    delta = F.linear(dt, sd["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(sd["A_log"])
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"])
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% mutant name=mixer_conv_keeps_last_outputs cell=mixer fails=test_mixer
def mamba_mixer(x, sd):
    d, n = sd["A_log"].shape
    rank, k = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[-1]
    L = x.shape[1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, z = xz[:, :d], xz[:, d:]
    h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., -L:])
    dt, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    delta = F.linear(dt, sd["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(sd["A_log"])
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"])
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% mutant name=mixer_dt_bias_forgotten cell=mixer fails=test_mixer
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
    y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z)
    return F.linear(y.transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% mutant name=mixer_manual_conv_variant cell=mixer fails=
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

# %% mutant name=state_forgets_conv cell=memory fails=test_state_bytes
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    d = cfg["expand"] * cfg["hidden_size"]
    return cfg["num_hidden_layers"] * d * cfg["state_size"] * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * context * batch * bytes_per_value

# %% mutant name=state_uses_hidden_not_inner cell=memory fails=test_state_bytes
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    d = cfg["hidden_size"]
    return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * context * batch * bytes_per_value

# %% mutant name=kv_query_heads cell=memory fails=test_kv_bytes
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    d = cfg["expand"] * cfg["hidden_size"]
    return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return 2 * cfg["num_hidden_layers"] * cfg["hidden_size"] * context * batch * bytes_per_value

# %% mutant name=kv_head_dim_ignored cell=memory fails=test_kv_bytes
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    d = cfg["expand"] * cfg["hidden_size"]
    return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * context * batch * bytes_per_value

# %% mutant name=memory_via_planner_variant cell=memory fails=
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    inner = int(cfg["expand"] * cfg["hidden_size"])
    conv = inner * cfg["conv_kernel"]
    ssm = inner * cfg["state_size"]
    return (conv + ssm) * cfg["num_hidden_layers"] * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return capacity.kv_bytes_per_token(cfg, bytes_per_value) * context * batch
