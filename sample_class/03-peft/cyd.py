# The first answer cell crashes on an import, so LoRALinear is never defined: test_lora fails (3 points). The
# other answers do not use it (DoRA and the QLoRA layer are written standalone): 15 - 3 = 12 points.
# %% answer id=lora
from lora_from_scratch import init_lora  # noqa: F401  (no such module)


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.A, self.B = init_lora(base, r, dtype)

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.A.T @ self.B.T)

    def merged_weight(self):
        return self.base.weight + self.scaling * self.B @ self.A

# %% answer id=adapter_count
def adapter_param_count(cfg, r, targets, dora=False):
    h = cfg["hidden_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    nq = cfg["num_attention_heads"] * hd
    nkv = cfg["num_key_value_heads"] * hd
    inter = cfg["intermediate_size"]
    outs = {"q_proj": nq, "k_proj": nkv, "v_proj": nkv, "o_proj": h, "gate_proj": inter, "up_proj": inter,
            "down_proj": h}
    ins = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": nq, "gate_proj": h, "up_proj": h, "down_proj": inter}
    lora = sum(r * (ins[t] + outs[t]) for t in targets)
    mag = sum(outs[t] for t in targets) if dora else 0
    return (lora + mag) * cfg["num_hidden_layers"]

# %% answer id=dora
class DoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scaling = alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        nn.init.normal_(self.A, std=0.02)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))
        self.m = nn.Parameter(torch.linalg.vector_norm(base.weight.detach().to(dtype), dim=-1))

    def _weight(self):
        return self.base.weight + self.scaling * self.B @ self.A

    def forward(self, x):
        w = self._weight()
        with torch.no_grad():
            n = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        return F.linear(x, self.m.unsqueeze(-1) * w / n, self.base.bias)

    def merged_weight(self):
        with torch.no_grad():
            w = self._weight()
            return self.m.unsqueeze(-1) * w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)

# %% answer id=neftune
def make_neftune_hook(alpha):
    def hook(module, inputs, output):
        if not module.training:
            return None  # a forward hook that returns None leaves the output as it is
        scale = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + scale * torch.empty_like(output).uniform_(-1.0, 1.0)

    return hook

# %% answer id=qlora
def to_nf4(linear, double_quant=True):
    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None,
                          compute_dtype=torch.float32, compress_statistics=double_quant, quant_type="nf4")
    q.load_state_dict(linear.state_dict())
    q.to("cpu")
    q.support_avx512bf16_for_cpu = False
    q.requires_grad_(False)
    return q


def nf4_weight_bytes(layer):
    s = layer.weight.quant_state
    parts = [layer.weight.data, s.absmax] + ([s.state2.absmax, s.offset] if s.nested else [])
    return sum(p.nbytes for p in parts)


class QLoRA(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.A), self.B)


def qlora_linear(linear, r, alpha):
    return QLoRA(to_nf4(linear), r, alpha)
