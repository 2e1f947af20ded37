# Plausible mistakes for 06-mamba (see tests/test_mutants.py for the format).

# %% mutant name=euler_not_zoh cell=discretize fails=test_discretize
replace <<<
    """Zero-order hold: (exp(dt A), A^-1 (exp(dt A) - I) B)."""
    Abar = torch.linalg.matrix_exp(dt * A)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    Bbar = torch.linalg.solve(A, (Abar - eye) @ B)
    return Abar, Bbar
===
    return torch.linalg.matrix_exp(dt * A), dt * B
>>>

# %% mutant name=zoh_without_inverse cell=discretize fails=test_discretize
delete """Zero-order hold: (exp(dt A), A^-1 (exp(dt A) - I) B)."""
replace eye = torch.eye(A.shape[0], dtype=A.dtype) => return Abar, (Abar - torch.eye(A.shape[0], dtype=A.dtype)) @ B
delete Bbar = torch.linalg.solve(A, (Abar - eye) @ B)
delete return Abar, Bbar

# %% variant name=van_loan_variant cell=discretize
def discretize_zoh(A, B, dt):
    # the augmented matrix exponential exp([[A, B], [0, 0]] dt) = [[Abar, Bbar], [0, I]]
    n = A.shape[0]
    B2 = B.reshape(n, -1)
    M = torch.zeros(n + B2.shape[1], n + B2.shape[1], dtype=A.dtype)
    M[:n, :n], M[:n, n:] = A, B2
    E = torch.linalg.matrix_exp(M * dt)
    return E[:n, :n], E[:n, n:].reshape(B.shape)

# %% mutant name=conv_not_causal cell=conv_view fails=test_conv_view
replace <<<
    """K_k = C Abar^k Bbar for k = 0..L-1."""
    out, v = [], Bbar.clone()
    for _ in range(L):
        out.append(C @ v)
        v = Abar @ v
    return torch.stack(out)
===
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k) @ Bbar for k in range(L)])
>>>
delete """y_t = sum_{k<=t} K_k u_{t-k} along the last axis of u."""
replace <<<
    y = F.conv1d(F.pad(flat, (L - 1, 0)), K.flip(0).reshape(1, 1, -1))
===
    y = F.conv1d(flat, K.flip(0).reshape(1, 1, -1), padding=L // 2)[..., :L]  # centred, sees the future
>>>

# %% mutant name=kernel_not_flipped cell=conv_view fails=test_conv_view
replace <<<
    """K_k = C Abar^k Bbar for k = 0..L-1."""
    out, v = [], Bbar.clone()
    for _ in range(L):
        out.append(C @ v)
        v = Abar @ v
    return torch.stack(out)
===
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k) @ Bbar for k in range(L)])
>>>
delete """y_t = sum_{k<=t} K_k u_{t-k} along the last axis of u."""
delete flat = u.reshape(-1, 1, L)
replace y = F.conv1d(F.pad(flat, (L - 1, 0)), K.flip(0).reshape(1, 1, -1)) => y = F.conv1d(F.pad(u.reshape(-1, 1, L), (L - 1, 0)), K.reshape(1, 1, -1))  # cross-correlation

# %% mutant name=kernel_off_by_one cell=conv_view fails=test_conv_view
replace <<<
    """K_k = C Abar^k Bbar for k = 0..L-1."""
    out, v = [], Bbar.clone()
    for _ in range(L):
        out.append(C @ v)
        v = Abar @ v
    return torch.stack(out)
===
    return torch.stack([C @ torch.linalg.matrix_power(Abar, k + 1) @ Bbar for k in range(L)])
>>>
delete """y_t = sum_{k<=t} K_k u_{t-k} along the last axis of u."""
delete flat = u.reshape(-1, 1, L)
replace y = F.conv1d(F.pad(flat, (L - 1, 0)), K.flip(0).reshape(1, 1, -1)) => y = F.conv1d(F.pad(u.reshape(-1, 1, L), (L - 1, 0)), K.flip(0).reshape(1, 1, -1))

# %% variant name=fft_conv_variant cell=conv_view
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
delete """Mamba's selective scan, one position at a time; returns (y, last_state)."""
delete delta = F.softplus(delta)
delete batch, d, L = u.shape
replace x = torch.zeros(batch, d, A.shape[1], dtype=u.dtype) => x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
replace for t in range(L): => for t in range(u.shape[-1]):
delete dA = torch.exp(delta[:, :, t, None] * A)
replace dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None] => x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
delete x = dA * x + dBu

# %% mutant name=bbar_is_b cell=selective_scan fails=test_selective_scan,test_mixer
delete """Mamba's selective scan, one position at a time; returns (y, last_state)."""
delete batch, d, L = u.shape
replace x = torch.zeros(batch, d, A.shape[1], dtype=u.dtype) => x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
replace for t in range(L): => for t in range(u.shape[-1]):
delete dA = torch.exp(delta[:, :, t, None] * A)
replace dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None] => x = torch.exp(delta[:, :, t, None] * A) * x + B[:, None, :, t] * u[:, :, t, None]
delete x = dA * x + dBu

# %% mutant name=bias_after_softplus cell=selective_scan fails=test_selective_scan,test_mixer
replace <<<
    """Mamba's selective scan, one position at a time; returns (y, last_state)."""
===
    delta = F.softplus(delta)
>>>
replace <<<
    delta = F.softplus(delta)
    batch, d, L = u.shape
===
>>>
replace x = torch.zeros(batch, d, A.shape[1], dtype=u.dtype) => x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
replace for t in range(L): => for t in range(u.shape[-1]):
delete dA = torch.exp(delta[:, :, t, None] * A)
replace dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None] => x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
delete x = dA * x + dBu

# %% mutant name=gate_is_sigmoid cell=selective_scan fails=test_selective_scan,test_mixer
delete """Mamba's selective scan, one position at a time; returns (y, last_state)."""
delete batch, d, L = u.shape
replace x = torch.zeros(batch, d, A.shape[1], dtype=u.dtype) => x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
replace for t in range(L): => for t in range(u.shape[-1]):
delete dA = torch.exp(delta[:, :, t, None] * A)
replace dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None] => x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
delete x = dA * x + dBu
replace y = y * F.silu(z) => y = y * torch.sigmoid(z)

# %% mutant name=abar_without_delta cell=selective_scan fails=test_selective_scan
# exp(A) instead of exp(ΔA): the first position is right (x_{-1} = 0), so only a check at later positions sees it;
# the visible one (Δ ≈ 0 must keep the state) does — tests/weeks/test_w06_mamba.py runs it alone on this mistake
replace dA = torch.exp(delta[:, :, t, None] * A) => dA = torch.exp(A)

# %% mutant name=state_not_carried cell=selective_scan fails=test_selective_scan
# the state restarts at every position (x_t = B̄_t u_t): position 0 is right again
replace x = dA * x + dBu => x = dBu

# %% variant name=einsum_variant cell=selective_scan
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

# %% variant name=scan_via_cumulative_logs_variant cell=selective_scan
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    # vectorised over positions inside chunks of 8: within a chunk the state is a cumulative sum weighted by
    # exp(cumulative ΔA) ratios; the chunk's last state carries to the next chunk
    if delta_bias is not None:
        delta = delta + delta_bias.reshape(1, -1, 1)
    dt = torch.nn.functional.softplus(delta).permute(0, 2, 1)  # (b, L, d)
    logA = dt[..., None] * A  # (b, L, d, n), log of Abar_t
    dBu = dt[..., None] * B.permute(0, 2, 1)[:, :, None, :] * u.permute(0, 2, 1)[..., None]
    state = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=dBu.dtype)
    ys = []
    for s0 in range(0, u.shape[2], 8):
        la, bu = logA[:, s0:s0 + 8], dBu[:, s0:s0 + 8]
        cum = torch.cumsum(la, 1)  # log of the product Abar_{s0} ... Abar_t
        # x_t = P_t x_{s0-1} + sum_{k<=t} (P_t / P_k) bu_k with P_t = exp(cum_t)
        ratio = torch.exp(cum[:, :, None] - cum[:, None, :])  # (b, t, k, d, n)
        keep = torch.tril(torch.ones(la.shape[1], la.shape[1], dtype=torch.bool))[None, :, :, None, None]
        xs = (torch.where(keep, ratio, 0.0) * bu[:, None]).sum(2) + torch.exp(cum) * state[:, None]
        ys.append((xs * C.permute(0, 2, 1)[:, s0:s0 + 8, None, :]).sum(-1))
        state = xs[:, -1]
    y = torch.cat(ys, 1).permute(0, 2, 1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y, state

# %% mutant name=scan_looks_ahead cell=parallel_scan fails=test_parallel_scan
delete """x_t = a_t x_{t-1} + b_t along the last axis in O(log L) Hillis-Steele steps."""
replace <<<
    while s < L:
===
    while s < L:  # combines each position with the one s *after* it
>>>
replace b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1) => b = torch.cat([a[..., :-s] * b[..., s:] + b[..., :-s], b[..., -s:]], -1)
replace a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1) => a = torch.cat([a[..., :-s] * a[..., s:], a[..., -s:]], -1)

# %% mutant name=scan_wrong_combine cell=parallel_scan fails=test_parallel_scan
delete """x_t = a_t x_{t-1} + b_t along the last axis in O(log L) Hillis-Steele steps."""
replace b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1) => b = torch.cat([b[..., :s], a[..., :-s] * b[..., :-s] + b[..., s:]], -1)  # the earlier a, not the later

# %% mutant name=scan_a_not_updated cell=parallel_scan fails=test_parallel_scan
delete """x_t = a_t x_{t-1} + b_t along the last axis in O(log L) Hillis-Steele steps."""
delete a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1)

# %% mutant name=scan_is_sequential cell=parallel_scan fails=test_parallel_scan
replace <<<
    """x_t = a_t x_{t-1} + b_t along the last axis in O(log L) Hillis-Steele steps."""
    L, s = b.shape[-1], 1
    while s < L:
        b = torch.cat([b[..., :s], a[..., s:] * b[..., :-s] + b[..., s:]], -1)
        a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], -1)
        s *= 2
    return b
===
    out = [b[..., 0]]
    for t in range(1, b.shape[-1]):
        out.append(a[..., t] * out[-1] + b[..., t])
    return torch.stack(out, -1)
>>>

# %% variant name=blelloch_variant cell=parallel_scan
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
delete """MambaMixer forward from its state dict: (batch, L, hidden) -> (batch, L, hidden)."""
replace h = F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L] => h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L])
delete h = F.silu(h)
replace A = -torch.exp(sd["A_log"]) => A = torch.exp(sd["A_log"])

# %% mutant name=mixer_conv_not_causal cell=mixer fails=test_mixer
delete """MambaMixer forward from its state dict: (batch, L, hidden) -> (batch, L, hidden)."""
delete L = x.shape[1]
replace h = F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L] => h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding="same", groups=d))
delete h = F.silu(h)

# %% mutant name=mixer_conv_keeps_last_outputs cell=mixer fails=test_mixer
delete """MambaMixer forward from its state dict: (batch, L, hidden) -> (batch, L, hidden)."""
replace h = F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L] => h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., -L:])
delete h = F.silu(h)

# %% mutant name=mixer_dt_bias_forgotten cell=mixer fails=test_mixer
delete """MambaMixer forward from its state dict: (batch, L, hidden) -> (batch, L, hidden)."""
replace h = F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L] => h = F.silu(F.conv1d(h, sd["conv1d.weight"], sd.get("conv1d.bias"), padding=k - 1, groups=d)[..., :L])
delete h = F.silu(h)
replace y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z, sd["dt_proj.bias"]) => y, _ = selective_scan(h, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd["D"], z)

# %% variant name=mixer_manual_conv_variant cell=mixer
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

# %% variant name=mixer_like_transformers_float32_variant cell=mixer
def mamba_mixer(x, sd):
    # computed as transformers' MambaMixer does: A = -exp(A_log.float()), and B and the scan input cast to float32
    # before the scan (so the result agrees with a float64 computation to ~1e-7, not 1e-12)
    d, n = sd["A_log"].shape
    rank = sd["dt_proj.weight"].shape[1]
    xz = F.linear(x, sd["in_proj.weight"], sd.get("in_proj.bias")).transpose(1, 2)
    h, gate = xz.chunk(2, dim=1)
    conv = torch.nn.Conv1d(d, d, sd["conv1d.weight"].shape[-1], groups=d, padding=sd["conv1d.weight"].shape[-1] - 1,
                           dtype=x.dtype)
    conv.load_state_dict({"weight": sd["conv1d.weight"], "bias": sd["conv1d.bias"]})
    h = F.silu(conv(h)[..., : x.shape[1]])
    time_step, B, C = torch.split(F.linear(h.transpose(1, 2), sd["x_proj.weight"]), [rank, n, n], dim=-1)
    time_step = sd["dt_proj.weight"] @ time_step.transpose(1, 2)
    A = -torch.exp(sd["A_log"].float())
    y, _ = selective_scan(h.float(), time_step, A, B.transpose(1, 2).float(), C.transpose(1, 2), sd["D"].float(),
                          gate, sd["dt_proj.bias"].float())
    return F.linear(y.to(x.dtype).transpose(1, 2), sd["out_proj.weight"], sd.get("out_proj.bias"))

# %% mutant name=state_forgets_conv cell=memory fails=test_state_bytes
delete """Conv + SSM state bytes of a Mamba model, all layers, `batch` sequences (independent of the context)."""
replace d = int(cfg["expand"] * cfg["hidden_size"]) => d = cfg["expand"] * cfg["hidden_size"]
replace return cfg["num_hidden_layers"] * d * (cfg["conv_kernel"] + cfg["state_size"]) * batch * bytes_per_value => return cfg["num_hidden_layers"] * d * cfg["state_size"] * batch * bytes_per_value
delete """KV-cache bytes of a Llama-style model for `batch` sequences of `context` tokens."""

# %% mutant name=state_uses_hidden_not_inner cell=memory fails=test_state_bytes
delete """Conv + SSM state bytes of a Mamba model, all layers, `batch` sequences (independent of the context)."""
replace d = int(cfg["expand"] * cfg["hidden_size"]) => d = cfg["hidden_size"]
delete """KV-cache bytes of a Llama-style model for `batch` sequences of `context` tokens."""

# %% mutant name=kv_query_heads cell=memory fails=test_kv_bytes
delete """Conv + SSM state bytes of a Mamba model, all layers, `batch` sequences (independent of the context)."""
replace d = int(cfg["expand"] * cfg["hidden_size"]) => d = cfg["expand"] * cfg["hidden_size"]
delete """KV-cache bytes of a Llama-style model for `batch` sequences of `context` tokens."""
delete hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
replace return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * hd * context * batch * bytes_per_value => return 2 * cfg["num_hidden_layers"] * cfg["hidden_size"] * context * batch * bytes_per_value

# %% mutant name=kv_head_dim_ignored cell=memory fails=test_kv_bytes
delete """Conv + SSM state bytes of a Mamba model, all layers, `batch` sequences (independent of the context)."""
replace d = int(cfg["expand"] * cfg["hidden_size"]) => d = cfg["expand"] * cfg["hidden_size"]
delete """KV-cache bytes of a Llama-style model for `batch` sequences of `context` tokens."""
replace hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"] => hd = cfg["hidden_size"] // cfg["num_attention_heads"]

# %% variant name=memory_via_planner_variant cell=memory
def recurrent_state_bytes(cfg, batch=1, bytes_per_value=2.0):
    inner = int(cfg["expand"] * cfg["hidden_size"])
    conv = inner * cfg["conv_kernel"]
    ssm = inner * cfg["state_size"]
    return (conv + ssm) * cfg["num_hidden_layers"] * batch * bytes_per_value


def kv_cache_bytes(cfg, context, batch=1, bytes_per_value=2.0):
    return capacity.kv_bytes_per_token(cfg, bytes_per_value) * context * batch
