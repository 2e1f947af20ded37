# Plausible mistakes for 03-peft (see tests/test_mutants.py for the format).

# %% mutant name=lora_scaling_one_over_r cell=lora fails=test_lora,test_dora,test_qlora
replace <<<
    """y = base(x) + (alpha / r) x A^T B^T; the base is frozen, B starts at zero."""

===
>>>
replace <<<
        self.scaling = alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
===
        self.scaling = 1 / r  # forgets alpha
        self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features, dtype=dtype) / base.in_features ** 0.5)
>>>

# %% mutant name=lora_a_zero_b_random cell=lora fails=test_lora
replace <<<
    """y = base(x) + (alpha / r) x A^T B^T; the base is frozen, B starts at zero."""

===
>>>
replace <<<
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))
===
        self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.zeros(r, base.in_features, dtype=dtype))  # the zero on the wrong factor
        self.B = nn.Parameter(torch.randn(base.out_features, r, dtype=dtype) * 0.01)
>>>

# %% mutant name=lora_base_not_frozen cell=lora fails=test_lora
replace <<<
    """y = base(x) + (alpha / r) x A^T B^T; the base is frozen, B starts at zero."""

===
>>>
delete for p in self.base.parameters():
delete p.requires_grad_(False)
replace self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype)) => self.A = nn.Parameter(torch.randn(r, base.in_features, dtype=dtype) / base.in_features ** 0.5)
delete nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

# %% mutant name=lora_adapters_get_no_gradient cell=lora fails=test_lora,test_qlora
replace <<<
    """y = base(x) + (alpha / r) x A^T B^T; the base is frozen, B starts at zero."""

===
>>>
delete for p in self.base.parameters():
replace <<<
            p.requires_grad_(False)
===
        self.base.requires_grad_(False)
>>>
replace self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype)) => self.A = nn.Parameter(torch.randn(r, base.in_features, dtype=dtype) / base.in_features ** 0.5)
delete nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
replace <<<
    def forward(self, x):
===
    def forward(self, x):
        delta = (self.B @ self.A).detach()  # "the update is a constant in the forward pass"
>>>
replace return self.base(x) + self.scaling * ((x @ self.A.T) @ self.B.T) => return self.base(x) + self.scaling * (x @ delta.T)

# %% variant name=lora_variant_einsum cell=lora
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

# %% mutant name=count_ignores_gqa cell=adapter_count fails=test_adapter_count
replace <<<
    """Trainable parameters of LoRA (or DoRA) adapters of rank r on `targets` of every layer."""
    h = cfg["hidden_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = cfg["num_attention_heads"] * hd
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    i = cfg["intermediate_size"]
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
===
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
>>>
replace per_layer = sum(r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if dora else 0) for t in targets) => return cfg["num_hidden_layers"] * sum(r * sum(shapes[t]) + (shapes[t][1] if dora else 0) for t in targets)
delete return cfg["num_hidden_layers"] * per_layer

# %% mutant name=count_dora_magnitude_per_input cell=adapter_count fails=test_adapter_count
delete """Trainable parameters of LoRA (or DoRA) adapters of rank r on `targets` of every layer."""
replace q = cfg["num_attention_heads"] * hd => q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
delete kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
replace per_layer = sum(r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if dora else 0) for t in targets) => return cfg["num_hidden_layers"] * sum(r * sum(shapes[t]) + (shapes[t][0] if dora else 0) for t in targets)
delete return cfg["num_hidden_layers"] * per_layer

# %% variant name=count_variant_loop cell=adapter_count
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

# %% mutant name=dora_norm_wrong_dim cell=dora fails=test_dora
replace <<<
    """W' = m * (W0 + s B A) / ||W0 + s B A|| (row norms, detached in the backward pass)."""

===
>>>
replace <<<
                                                    dim=1))
===
                                                    dim=0))
>>>
replace norm = torch.linalg.norm(w, dim=1).detach() => norm = torch.linalg.norm(w, dim=0).detach()  # per input column
replace y = x @ ((self.m / norm)[:, None] * w).T => y = x @ (w * (self.m / norm)[None, :]).T
replace return (self.m / torch.linalg.norm(w, dim=1))[:, None] * w => return w * (self.m / torch.linalg.norm(w, dim=0))[None, :]

# %% mutant name=dora_norm_not_detached cell=dora fails=test_dora
replace <<<
    """W' = m * (W0 + s B A) / ||W0 + s B A|| (row norms, detached in the backward pass)."""

===
>>>
replace norm = torch.linalg.norm(w, dim=1).detach() => norm = torch.linalg.norm(w, dim=1)  # gradient flows through the norm

# %% mutant name=dora_norm_of_base_only cell=dora fails=test_dora
replace <<<
    """W' = m * (W0 + s B A) / ||W0 + s B A|| (row norms, detached in the backward pass)."""

===
>>>
replace <<<
        with torch.no_grad():
            self.m = nn.Parameter(torch.linalg.norm(self.base.weight.to(dtype) + self.scaling * self.B @ self.A,
                                                    dim=1))
===
        self.m = nn.Parameter(self.base.weight.detach().to(dtype).norm(dim=1))
>>>
replace <<<
        norm = torch.linalg.norm(w, dim=1).detach()
===
        norm = self.base.weight.norm(dim=1)  # the norm of W0, not of W0 + sBA
>>>
replace return (self.m / torch.linalg.norm(w, dim=1))[:, None] * w => return (self.m / self.base.weight.norm(dim=1))[:, None] * w

# %% variant name=dora_variant_peft_style cell=dora
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

# %% mutant name=neftune_scaled_by_sqrt_L_only cell=neftune fails=test_neftune
delete """A forward hook adding Uniform(-1, 1) * alpha / sqrt(L * d) to the embeddings in training mode."""
replace mag = alpha / math.sqrt(output.shape[1] * output.shape[2]) => mag = alpha / math.sqrt(output.shape[1])

# %% mutant name=neftune_on_at_eval cell=neftune fails=test_neftune
delete """A forward hook adding Uniform(-1, 1) * alpha / sqrt(L * d) to the embeddings in training mode."""
delete if not module.training:
delete return output

# %% mutant name=neftune_gaussian_noise cell=neftune fails=test_neftune
delete """A forward hook adding Uniform(-1, 1) * alpha / sqrt(L * d) to the embeddings in training mode."""
replace mag = alpha / math.sqrt(output.shape[1] * output.shape[2]) => return output + torch.randn_like(output) * alpha / math.sqrt(output.shape[1] * output.shape[2])
delete return output + torch.zeros_like(output).uniform_(-mag, mag)

# %% variant name=neftune_variant_rand cell=neftune
def make_neftune_hook(alpha):
    def hook(module, inputs, output):
        if module.training:
            _, L, d = output.shape
            eps = torch.rand(output.shape, dtype=output.dtype) * 2 - 1
            output = output + eps * (alpha / (L * d) ** 0.5)
        return output

    return hook

# %% mutant name=nf4_without_double_quant cell=qlora fails=test_nf4_memory
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
replace compute_dtype=torch.float32, compress_statistics=double_quant, quant_type="nf4") => compute_dtype=torch.float32, compress_statistics=False, quant_type="nf4")
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""

# %% mutant name=nf4_bytes_codes_only cell=qlora fails=test_nf4_memory
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
replace <<<
    """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
    qs = layer.weight.quant_state
    tensors = [layer.weight.data, qs.absmax]
    if qs.nested:
        tensors += [qs.state2.absmax, qs.offset]
    return sum(t.numel() * t.element_size() for t in tensors)
===
    return layer.weight.data.numel() * layer.weight.data.element_size()  # forgets the scales
>>>
delete """LoRA adapters (float32) around an NF4 copy of linear."""

# %% mutant name=qlora_everything_frozen cell=qlora fails=test_qlora
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
delete q.requires_grad_(False)
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""
replace return LoRALinear(to_nf4(linear), r, alpha, dtype=torch.float32) => return LoRALinear(to_nf4(linear), r, alpha, dtype=torch.float32).requires_grad_(False)  # "freeze the model"

# %% mutant name=qlora_trap_flag_left_on cell=qlora fails=test_qlora
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
delete q.support_avx512bf16_for_cpu = False
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""

# %% variant name=qlora_variant_params4bit cell=qlora
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

# The classic NF4 counting slips: each is caught by the visible small-layer count (206 bytes for 64x6), which the
# 1024x1024 bits-per-weight check alone lets through (4 bytes in 2^19 is below its tolerance).
# %% mutant name=nf4_bytes_without_offset cell=qlora fails=test_nf4_memory
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
replace tensors += [qs.state2.absmax, qs.offset] => tensors += [qs.state2.absmax]  # the offset "is only a scalar"
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""

# %% mutant name=nf4_bytes_without_second_level cell=qlora fails=test_nf4_memory
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
delete if qs.nested:
delete tensors += [qs.state2.absmax, qs.offset]
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""

# %% mutant name=nf4_bytes_absmax_as_float32 cell=qlora fails=test_nf4_memory
delete """A frozen NF4 Linear4bit with linear's weights, safe to train through on any CPU."""
replace <<<
    return sum(t.numel() * t.element_size() for t in tensors)
===
    return sum(t.numel() * t.element_size() for t in tensors) + 3 * qs.absmax.numel()  # absmax "is float32"
>>>
delete """Bytes of the packed codes, the block absmax and (double quant) the second-level statistics."""
delete """LoRA adapters (float32) around an NF4 copy of linear."""
