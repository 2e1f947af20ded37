# The first answer cell crashes on an import, so round_to_format, e2m1_encode/decode and pack/unpack_fp4 are never
# defined: test_round_fp8 (2), test_round_e2m1 (1) and test_fp4_codes (1) fail. Every later answer is
# self-contained (torch's float8 casts and a table of E2M1 values) and right. 16 - 4 = 12 points.
# %% answer id=formats
from torch import float4_e2m1fn  # noqa: F401  (no such dtype: torch has float4_e2m1fn_x2)

# %% answer id=fp8
def fp8_qdq(x, per_channel=False, fmt="e4m3"):
    dt = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[fmt]
    top = torch.finfo(dt).max
    x = x.double()
    amax = x.abs().amax(1, keepdim=True) if per_channel else x.abs().max()
    s = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    return (x / s).clamp(-top, top).to(dt).double() * s


def sqnr_db(x, xhat):
    err = (x - xhat).double()
    return 10 * math.log10(float(x.double().square().sum() / err.square().sum()))

# %% answer id=nvfp4
VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)
MIDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=torch.float64)


def fp4_code(y):
    a = y.abs()
    idx = torch.bucketize(a, MIDS)  # index of the first midpoint >= a
    tie = (idx < 7) & (a == MIDS[idx.clamp(max=6)])
    idx = torch.where(tie & (idx % 2 == 1), idx + 1, idx)  # exactly on a midpoint: the even code
    return (idx + 8 * torch.signbit(y).long()).to(torch.uint8)


def nvfp4_quantize(w, block=16):
    rows, cols = w.shape
    x = F.pad(w.double(), (0, -cols % block)).view(rows, -1, block)
    m = x.abs().max()
    sg = float(torch.tensor(float(m) / 2688 if m > 0 else 1.0, dtype=torch.float32))
    sb = (x.abs().amax(-1) / 6 / sg).clamp(max=448).to(torch.float8_e4m3fn).double()
    eff = (sb * sg).unsqueeze(-1)
    codes = torch.where(eff > 0, fp4_code(x / torch.where(eff > 0, eff, 1.0)), 0).to(torch.uint8).view(rows, -1)
    return codes[:, 0::2] | (codes[:, 1::2] << 4), sb, sg


def nvfp4_dequantize(packed, s_block, s_global, cols, block=16):
    c = torch.stack([packed & 15, packed >> 4], -1).view(packed.shape[0], -1).long()
    v = VALUES[c & 7] * torch.where(c >= 8, -1.0, 1.0).double()
    v = v.view(packed.shape[0], -1, block) * (s_block * s_global).unsqueeze(-1)
    return v.view(packed.shape[0], -1)[:, :cols]


def mxfp4_qdq(w, block=32):
    rows, cols = w.shape
    x = F.pad(w.double(), (0, -cols % block)).view(rows, -1, block)
    amax = x.abs().amax(-1, keepdim=True)
    s = torch.exp2(torch.floor(torch.log2(torch.where(amax > 0, amax, 1.0))) - 2)
    c = fp4_code((x / s).clamp(-6, 6)).long()
    v = VALUES[c & 7] * torch.where(c >= 8, -1.0, 1.0).double()
    return (v * s).view(rows, -1)[:, :cols]

# %% answer id=fakequant
def fake_quantize_linears(model, qdq):
    out = []
    for name, mod in model.named_modules():
        if type(mod) is torch.nn.Linear and name.startswith("model.layers."):
            mod.weight.data.copy_(qdq(mod.weight.data))
            out.append(name)
    return out


def perplexity(model, ids):
    with torch.no_grad():
        logits = model(ids).logits.double()
    return float(torch.exp(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())))

# %% answer id=kv
def fp8_kv_attention(q, k, v):
    k8, v8 = fp8_qdq(k), fp8_qdq(v)
    w = (q.double() @ k8.mT) / q.shape[-1] ** 0.5
    n = q.shape[-2]
    w = w + torch.triu(torch.full((n, n), float("-inf"), dtype=torch.float64), 1)
    return w.softmax(-1) @ v8
