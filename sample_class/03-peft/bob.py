# Partial. Expected 6 of 15: LoRA right (3), adapter count with full-width k/v projections, GQA ignored (0 of 2),
# DoRA with the norm left in the backward pass (outputs match PEFT, gradients do not: 0 of 4), NEFTune scaled by
# 1/sqrt(L) only (0 of 3), NF4 memory right (1), QLoRA right (2).
# %% answer id=lora
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad = False
        self.scaling = alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features, dtype=dtype) * 0.01)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))

    def forward(self, x):
        return self.base(x) + (x @ (self.B @ self.A).T) * self.scaling

    def merged_weight(self):
        return self.base.weight.detach() + self.scaling * (self.B @ self.A).detach()

# %% answer id=adapter_count
def adapter_param_count(cfg, r, targets, dora=False):
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    sizes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
             "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    per_layer = 0
    for t in targets:
        i, o = sizes[t]
        per_layer += r * (i + o) + (o if dora else 0)
    return per_layer * cfg["num_hidden_layers"]

# %% answer id=dora
class DoRALinear(LoRALinear):
    def __init__(self, base, r, alpha, dtype=torch.float32):
        super().__init__(base, r, alpha, dtype)
        self.m = nn.Parameter(base.weight.detach().to(dtype).norm(dim=1))

    def forward(self, x):
        w = self.base.weight + self.scaling * self.B @ self.A
        w = self.m[:, None] * w / w.norm(dim=1, keepdim=True)
        out = x @ w.T
        if self.base.bias is not None:
            out = out + self.base.bias
        return out

    def merged_weight(self):
        w = self.base.weight + self.scaling * self.B @ self.A
        return (self.m[:, None] * w / w.norm(dim=1, keepdim=True)).detach()

# %% answer id=neftune
def make_neftune_hook(alpha):
    def hook(module, inputs, output):
        if module.training:
            L = output.shape[1]
            output = output + (alpha / L ** 0.5) * (2 * torch.rand_like(output) - 1)
        return output

    return hook

# %% answer id=qlora
def to_nf4(linear, double_quant=True):
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=torch.float32, compress_statistics=double_quant, quant_type="nf4")
    layer.load_state_dict(linear.state_dict())
    layer = layer.to("cpu")
    layer.support_avx512bf16_for_cpu = False
    for p in layer.parameters():
        p.requires_grad = False
    return layer


def nf4_weight_bytes(layer):
    st = layer.weight.quant_state
    total = layer.weight.numel() * layer.weight.element_size() + st.absmax.numel() * st.absmax.element_size()
    if st.nested:
        total += st.state2.absmax.numel() * st.state2.absmax.element_size() + st.offset.numel() * 4
    return total


def qlora_linear(linear, r, alpha):
    return LoRALinear(to_nf4(linear), r, alpha)
