# Complete; every answer written differently from the reference solution: 16 of 16 points.
# %% answer id=formats
FORMAT_BITS = {"e4m3": (4, 3, 7, 448.0), "e5m2": (5, 2, 15, 57344.0), "e2m1": (2, 1, 1, 6.0)}
_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)


def round_to_format(x, fmt):
    if fmt not in FORMAT_BITS:
        raise ValueError(f"no such format {fmt}")
    _, m, bias, fmax = FORMAT_BITS[fmt]
    x = torch.as_tensor(x, dtype=torch.float64)
    a = x.abs().clamp(max=fmax)
    exp = torch.frexp(torch.where(a > 0, a, torch.ones_like(a))).exponent.double() - 1
    ulp = 2.0 ** (torch.maximum(exp, torch.tensor(1.0 - bias)) - m)
    y = torch.round(a / ulp) * ulp
    y = torch.minimum(y, torch.tensor(fmax, dtype=torch.float64))
    return torch.where(torch.signbit(x), -y, y)


def e2m1_encode(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    mag = round_to_format(x, "e2m1").abs()
    idx = torch.searchsorted(_E2M1, mag)
    return (idx + 8 * torch.signbit(x).long()).to(torch.uint8)


def e2m1_decode(codes):
    c = codes.long()
    return _E2M1[c % 8] * (1 - 2 * (c // 8)).double()


def pack_fp4(codes):
    c = codes.long()
    return (c[..., 0::2] + 16 * c[..., 1::2]).to(torch.uint8)


def unpack_fp4(packed):
    p = packed.long()
    out = torch.stack([p % 16, p // 16], dim=-1)
    return out.reshape(*packed.shape[:-1], -1).to(torch.uint8)

# %% answer id=fp8
def fp8_qdq(x, per_channel=False, fmt="e4m3"):
    limit = {"e4m3": 448.0, "e5m2": 57344.0}[fmt]
    x = x.to(torch.float64)
    if per_channel:
        amax = torch.stack([row.abs().max() for row in x]).unsqueeze(1)
    else:
        amax = x.abs().max()
    s = amax / limit
    s = torch.where(s == 0, torch.ones_like(s), s)
    return s * round_to_format(x / s, fmt)


def sqnr_db(x, xhat):
    signal = torch.sum(x.double() ** 2)
    noise = torch.sum((x.double() - xhat.double()) ** 2)
    return 10.0 * math.log10(signal.item() / noise.item())

# %% answer id=nvfp4
def nvfp4_quantize(w, block=16):
    rows, cols = w.shape
    x = F.pad(w.double(), (0, (-cols) % block)).reshape(rows, -1, block)
    tensor_amax = x.abs().max()
    sg = (tensor_amax / 2688).float().item() if tensor_amax > 0 else 1.0
    sb = (x.abs().amax(-1) / (6 * sg)).clamp(max=448).to(torch.float8_e4m3fn).double()
    eff = sb.unsqueeze(-1) * sg
    y = torch.zeros_like(x)
    nz = (eff > 0).expand_as(x)
    y[nz] = (x / eff.clamp(min=1e-300))[nz]
    return pack_fp4(e2m1_encode(y).reshape(rows, -1)), sb, sg


def nvfp4_dequantize(packed, s_block, s_global, cols, block=16):
    v = e2m1_decode(unpack_fp4(packed))
    v = v.reshape(packed.shape[0], -1, block) * s_block.unsqueeze(-1) * s_global
    return v.flatten(1)[:, :cols]


def mxfp4_qdq(w, block=32):
    rows, cols = w.shape
    x = F.pad(w.double(), (0, (-cols) % block)).reshape(rows, -1, block)
    amax = x.abs().amax(-1, keepdim=True)
    e = torch.frexp(torch.where(amax > 0, amax, torch.ones_like(amax))).exponent - 1
    s = 2.0 ** (e.double() - 2)
    return (round_to_format(x / s, "e2m1") * s).flatten(1)[:, :cols]

# %% answer id=fakequant
def fake_quantize_linears(model, qdq):
    changed = []
    for i, layer in enumerate(model.model.layers):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.data = qdq(mod.weight.data).to(mod.weight.dtype)
                changed.append(f"model.layers.{i}.{name}")
    return changed


def perplexity(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    return math.exp(out.loss.item())

# %% answer id=kv
def fp8_kv_attention(q, k, v):
    return F.scaled_dot_product_attention(q.double(), fp8_qdq(k), fp8_qdq(v), is_causal=True)
