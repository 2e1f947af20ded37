# Complete; every answer written differently from the reference solution: 15 of 15 points.
# %% answer id=lora
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__()
        base.weight.requires_grad = False
        if base.bias is not None:
            base.bias.requires_grad = False
        self.base = base
        self.scaling = float(alpha) / float(r)
        a = torch.empty(r, base.in_features, dtype=dtype).uniform_(-1, 1) / math.sqrt(base.in_features)
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros((base.out_features, r), dtype=dtype))

    def forward(self, x):
        low = torch.einsum("...i,ri->...r", x, self.A)
        return self.base(x) + torch.einsum("...r,or->...o", low, self.B) * self.scaling

    def merged_weight(self):
        return (self.base.weight + self.scaling * torch.mm(self.B, self.A)).detach()

# %% answer id=adapter_count
def adapter_param_count(cfg, r, targets, dora=False):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg["head_dim"] if cfg.get("head_dim") else hidden // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    io = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv_heads * head_dim),
          "v_proj": (hidden, kv_heads * head_dim), "o_proj": (heads * head_dim, hidden),
          "gate_proj": (hidden, cfg["intermediate_size"]), "up_proj": (hidden, cfg["intermediate_size"]),
          "down_proj": (cfg["intermediate_size"], hidden)}
    total = 0
    for _ in range(cfg["num_hidden_layers"]):
        for t in targets:
            fan_in, fan_out = io[t]
            total += fan_in * r + r * fan_out + (fan_out if dora else 0)
    return total

# %% answer id=dora
class DoRALinear(nn.Module):
    # standalone, computed the way PEFT does: base result rescaled plus the scaled LoRA path
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__()
        base.requires_grad_(False)
        self.base, self.scaling = base, alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features, dtype=dtype) * 0.1)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))
        self.m = nn.Parameter(base.weight.detach().to(dtype).pow(2).sum(1).sqrt())

    def forward(self, x):
        w = self.base.weight + self.scaling * (self.B @ self.A)
        scale = (self.m / w.pow(2).sum(1).sqrt().detach()).view(1, -1)
        bias = 0 if self.base.bias is None else self.base.bias
        plain = F.linear(x, self.base.weight)
        lora = F.linear(F.linear(x, self.A), self.B) * self.scaling
        return scale * (plain + lora) + bias

    def merged_weight(self):
        w = (self.base.weight + self.scaling * (self.B @ self.A)).detach()
        return w * (self.m.detach() / w.norm(dim=1)).unsqueeze(1)

# %% answer id=neftune
def make_neftune_hook(alpha):
    def hook(module, inputs, output):
        if module.training:
            _, L, d = output.shape
            eps = torch.rand(output.shape, dtype=output.dtype) * 2 - 1
            output = output + eps * (alpha / (L * d) ** 0.5)
        return output

    return hook

# %% answer id=qlora
def to_nf4(linear, double_quant=True):
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=torch.float32, compress_statistics=double_quant, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(linear.weight.detach().float().clone(), requires_grad=False,
                                     quant_type="nf4", compress_statistics=double_quant)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
    layer.support_avx512bf16_for_cpu = False
    return layer.to("cpu")


def nf4_weight_bytes(layer):
    state = layer.weight.quant_state
    n = layer.weight.data.nbytes + state.absmax.nbytes
    if state.nested:
        n += state.state2.absmax.nbytes + state.offset.nbytes
    return n


def qlora_linear(linear, r, alpha):
    adapted = LoRALinear(to_nf4(linear), r, alpha)
    return adapted
