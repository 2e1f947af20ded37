"""The week-03 reference against the real libraries: PEFT (LoRA, DoRA), transformers (NEFTune), bitsandbytes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparkcourse.models import random_llama
from sparkcourse.reference import w03_peft as ref

peft = pytest.importorskip("peft")


class _Wrap(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x)


def _peft_layer(lin, r, alpha, dora):
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], lora_dropout=0.0,
                          init_lora_weights=False, use_dora=dora)
    return peft.get_peft_model(_Wrap(copy.deepcopy(lin)), cfg).double()


def _pl(model):
    return model.base_model.model.lin


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("inf,outf,r,alpha,bias", [(13, 7, 3, 10.0, True), (9, 20, 5, 2.0, False)])
def test_layer_matches_peft(dora, inf, outf, r, alpha, bias):
    torch.manual_seed(0)
    lin = nn.Linear(inf, outf, bias=bias).double()
    pm = _peft_layer(lin, r, alpha, dora)
    pl = _pl(pm)
    mine = (ref.DoRALinear if dora else ref.LoRALinear)(copy.deepcopy(lin), r, alpha, dtype=torch.float64)
    with torch.no_grad():
        mine.A.copy_(pl.lora_A["default"].weight)
        mine.B.copy_(pl.lora_B["default"].weight)
        if dora:
            mine.m.copy_(pl.lora_magnitude_vector["default"].weight)
    assert mine.scaling == pl.scaling["default"]
    x = torch.randn(4, 6, inf, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = mine(x1), pm(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mine.A.grad, pl.lora_A["default"].weight.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mine.B.grad, pl.lora_B["default"].weight.grad, rtol=1e-9, atol=1e-12)
    if dora:
        torch.testing.assert_close(mine.m.grad, pl.lora_magnitude_vector["default"].weight.grad,
                                   rtol=1e-9, atol=1e-12)
    merged = pm.merge_and_unload().lin.weight
    torch.testing.assert_close(mine.merged_weight(), merged, rtol=1e-10, atol=1e-12)


def test_dora_norm_not_detached_differs():
    """The detach matters: without it the gradients of A and B change by O(1)."""
    torch.manual_seed(1)
    lin = nn.Linear(8, 6).double()
    d = ref.DoRALinear(lin, 2, 4.0, dtype=torch.float64)
    with torch.no_grad():
        d.B.normal_()
    x = torch.randn(5, 8, dtype=torch.float64)
    d(x).pow(2).sum().backward()
    ga = d.A.grad.clone()
    d.zero_grad()
    w = d.base.weight + d.delta_weight()
    y = x @ ((d.m / torch.linalg.norm(w, dim=1))[:, None] * w).T + d.base.bias
    y.pow(2).sum().backward()
    assert (d.A.grad - ga).abs().max() > 1e-3


def test_fresh_lora_is_the_base():
    torch.manual_seed(2)
    lin = nn.Linear(11, 5)
    lo = ref.LoRALinear(lin, 4, 8.0)
    x = torch.randn(3, 11)
    torch.testing.assert_close(lo(x), lin(x))
    assert sum(p.numel() for p in lo.parameters() if p.requires_grad) == 4 * (11 + 5)
    do = ref.DoRALinear(nn.Linear(11, 5), 4, 8.0)
    torch.testing.assert_close(do.m, torch.linalg.norm(do.base.weight, dim=1))


@pytest.mark.parametrize("dora", [False, True])
def test_adapter_count_matches_peft(dora):
    cfg = dict(vocab_size=50, hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, head_dim=6)
    model = random_llama(None, **cfg)
    targets = ["q_proj", "v_proj", "o_proj", "down_proj"]
    pm = peft.get_peft_model(model, peft.LoraConfig(r=3, lora_alpha=6, target_modules=targets, use_dora=dora))
    assert ref.adapter_param_count(cfg, 3, targets, dora=dora) == pm.get_nb_trainable_parameters()[0]


def test_neftune_matches_transformers_hook():
    from transformers.integrations.neftune import neftune_post_forward_hook

    emb = nn.Embedding(30, 16)
    nn.init.zeros_(emb.weight)
    emb.neftune_noise_alpha = 5.0
    ids = torch.randint(0, 30, (8, 37))
    h = emb.register_forward_hook(neftune_post_forward_hook)
    torch.manual_seed(3)
    want = emb(ids)
    h.remove()
    h = emb.register_forward_hook(ref.make_neftune_hook(5.0))
    torch.manual_seed(3)
    got = emb(ids)
    torch.testing.assert_close(got, want)  # same draw in the same order: identical
    emb.eval()
    assert emb(ids).abs().max() == 0
    h.remove()


def test_nf4_bytes_and_gradients():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(4)
    big = nn.Linear(1024, 1024, bias=False)
    q = ref.to_nf4(big)
    assert isinstance(q, bnb.nn.Linear4bit)
    bits = 8 * ref.nf4_weight_bytes(q) / big.weight.numel()
    assert abs(bits - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-3  # ≈ 4.127 bits (Dettmers et al., QLoRA, 2023)
    # A small layer, counted by hand: 384 weights -> 192 bytes of codes, 6 uint8 block scales, one float32
    # second-level scale (6 scales fit one block of 256) and the float32 offset: the notebook's visible test.
    assert ref.nf4_weight_bytes(ref.to_nf4(nn.Linear(6, 64, bias=False))) == 192 + 6 + 4 + 4
    q1 = ref.to_nf4(big, double_quant=False)
    assert 8 * ref.nf4_weight_bytes(q1) / big.weight.numel() == pytest.approx(4.5)
    lin = nn.Linear(40, 24)
    ql = ref.qlora_linear(lin, 4, 8.0)
    with torch.no_grad():
        ql.B.normal_()
    x = torch.randn(3, 40, requires_grad=True)
    ql.eval()
    ql(x)  # an eval forward first: the AVX512-BF16 trap would repack here if the flag were on
    ql.train()
    y = ql(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    W = ref.dequantize(ql.base)
    A, B = ql.A.detach().requires_grad_(), ql.B.detach().requires_grad_()
    x2 = x.detach().requires_grad_()
    y2 = x2 @ W.T + lin.bias.detach() + ql.scaling * (x2 @ A.T @ B.T)
    torch.testing.assert_close(y, y2, rtol=1e-4, atol=1e-4)
    (y2 * g).sum().backward()
    torch.testing.assert_close(ql.A.grad, A.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ql.B.grad, B.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
