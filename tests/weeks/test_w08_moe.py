"""sparkcourse.reference.w08_moe against its oracles: transformers' Mixtral block and load-balancing loss,
Switch Transformers' router (capacity) and z-loss, DeepSeek-V2's MoE; and the lab's experiment on a tiny config."""

from __future__ import annotations

import pytest
import torch

from sparkcourse.labs import w08_moe as lab
from sparkcourse.reference import w08_moe as ref

torch.set_num_threads(2)


def _mixtral_block(seed, hidden=12, inter=7, experts=5, k=2):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    torch.manual_seed(seed)
    cfg = MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=experts,
                        num_experts_per_tok=k)
    block = MixtralSparseMoeBlock(cfg).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    return block


def test_route_matches_mixtral_router():
    block = _mixtral_block(0, experts=6, k=3)
    x = torch.randn(17, 12, dtype=torch.float64)
    logits, scores, idx = block.gate(x)
    w, i = ref.route(logits, 3)
    assert torch.equal(i, idx)
    torch.testing.assert_close(w, scores.to(w.dtype), rtol=1e-6, atol=1e-7)  # transformers' softmax is float32
    # renormalised top-k of the softmax == softmax over the top-k logits
    torch.testing.assert_close(w, torch.softmax(logits.gather(1, i), -1), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("experts", "k", "shape"), [(5, 2, (2, 7)), (4, 1, (9,)), (3, 3, (1, 4))])
def test_sparse_moe_matches_mixtral_block(experts, k, shape):
    block = _mixtral_block(experts, experts=experts, k=k)
    x = torch.randn(*shape, 12, dtype=torch.float64)
    with torch.no_grad():
        want = block(x.reshape(-1 if len(shape) == 1 else shape[0], shape[-1] if len(shape) > 1 else 1, 12))
        got = ref.sparse_moe(x, block.state_dict(), k)
    torch.testing.assert_close(got, want.reshape(got.shape), rtol=1e-5, atol=1e-6)  # float32 router softmax


def test_expert_capacity_rounds_up():
    assert ref.expert_capacity(10, 4, 1.0) == 3  # 2.5 -> 3
    assert ref.expert_capacity(10, 4, 1.25) == 4  # 3.125 -> 4
    assert ref.expert_capacity(16, 4, 1.0) == 4
    assert ref.expert_capacity(10, 4, 1.0, top_k=2) == 5
    assert ref.expert_capacity(1, 8, 0.5) == 1


@pytest.mark.parametrize(("groups", "seq", "experts", "cap"), [(3, 11, 4, 2), (2, 16, 3, 5), (1, 5, 2, 1)])
def test_dispatch_matches_switch_router(groups, seq, experts, cap):
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersTop1Router,
    )

    torch.manual_seed(seq)
    router = SwitchTransformersTop1Router(SwitchTransformersConfig(d_model=6, num_experts=experts,
                                                                   expert_capacity=cap)).eval()
    x = torch.randn(groups, seq, 6)
    mask, _, logits = router(x)
    kept, dropped = ref.dispatch_top1(logits.argmax(-1), experts, cap)
    assert torch.equal(kept, mask.sum(-1) > 0)
    assert dropped == int((mask.sum(-1) == 0).sum())


@pytest.mark.parametrize(("tokens", "experts", "k"), [(13, 4, 1), (40, 8, 2), (7, 5, 3)])
def test_load_balancing_loss_matches_transformers(tokens, experts, k):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.randn(tokens, experts, dtype=torch.float64, generator=torch.Generator().manual_seed(tokens))
    want = load_balancing_loss_func((logits,), experts, k)
    torch.testing.assert_close(ref.load_balancing_loss(logits, k), want.to(torch.float64), rtol=1e-6, atol=0)


def test_z_loss_matches_switch_transformers():
    from transformers.models.switch_transformers.modeling_switch_transformers import router_z_loss_func

    logits = 5 * torch.randn(3, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ref.router_z_loss(logits), router_z_loss_func(logits), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("shared", "k", "scale"), [(1, 2, 1.0), (2, 3, 2.5)])
def test_deepseek_moe_matches_deepseek_v2(shared, k, scale):
    from transformers import DeepseekV2Config
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    torch.manual_seed(shared)
    cfg = DeepseekV2Config(hidden_size=10, num_attention_heads=2, moe_intermediate_size=4, n_routed_experts=8, n_shared_experts=shared,
                           num_experts_per_tok=k, routed_scaling_factor=scale, topk_method="greedy")
    block = DeepseekV2Moe(cfg).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
        x = torch.randn(2, 5, 10, dtype=torch.float64)
        torch.testing.assert_close(ref.deepseek_moe(x, block.state_dict(), k, scale), block(x), rtol=1e-5,
                                   atol=1e-6)  # its router runs in float32


def test_lab_experiment_runs_on_a_tiny_config():
    res = lab.compare(ref.route, ref.load_balancing_loss, seeds=(0,), steps=2, aux_coefs=(0.0, 0.01),
                      hidden=16, layers=1, experts=4, top_k=2, expert_size=8, batch=4, block=16)
    assert {r["model"] for r in res} == {"dense", "moe, aux 0", "moe, aux 0.01"}
    for r in res:
        assert r["eval_loss"] > 0
        if r["model"] != "dense":
            assert r["load"].shape == (1, 4)
            torch.testing.assert_close(r["load"].sum(-1), torch.full((1,), 2.0, dtype=r["load"].dtype))
    dense, moe = (next(r for r in res if r["model"] == m) for m in ("dense", "moe, aux 0"))
    assert dense["active_params"] == moe["active_params"] - 1 * 16 * 3  # the router: (E - 1) · H per layer


def test_param_split_of_gpt_oss_matches_the_model_card():
    from sparkcourse import hub

    s = lab.param_split(lab.meta_model(hub.shipped_config("openai/gpt-oss-120b")))
    # OpenAI, gpt-oss model card (2025-08): 116.83B total, 5.13B active (input embedding not counted)
    assert round(s["total"] / 1e9, 2) == 116.83 and round(s["active"] / 1e9, 2) == 5.13
    mix = lab.param_split(lab.meta_model(hub.shipped_config("mistralai/Mixtral-8x7B-v0.1")))
    from sparkcourse import capacity

    planner = capacity.param_count(capacity.CONFIGS["mistralai/Mixtral-8x7B-v0.1"])
    assert mix["total"] == planner.total and mix["active"] + mix["embed"] == planner.active


def test_spark_path_on_cpu_with_a_tiny_standin(tmp_path, monkeypatch):
    """The spark cell's path (stand-in from a shipped Mixtral config, param split, decode against a bound) on a
    tiny config: the cached greedy decode equals transformers' generate."""
    import json

    from sparkcourse import hub

    values = hub.shipped_config("mistralai/Mixtral-8x7B-v0.1") | dict(
        hidden_size=32, intermediate_size=16, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100)
    (tmp_path / "mistralai--Mixtral-8x7B-v0.1.json").write_text(json.dumps(values))
    monkeypatch.setattr(hub, "CONFIG_DIR", tmp_path)
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    model, _, label = hub.causal_lm("mistralai/Mixtral-8x7B-v0.1", dtype=torch.float32, device="cpu")
    assert "stand-in" in label and "3 of 3 layers" in label
    r = lab.against_bound(model, bandwidth=1e10, prompt_len=6, new_tokens=5)
    per_expert, layers = 3 * 32 * 16, 3
    assert r["split"]["active"] == r["split"]["total"] - r["split"]["embed"] - layers * 6 * per_expert
    assert r["read_bytes"] == 4 * r["split"]["active"] and r["peak_bytes"] is None and len(r["step_s"]) == 5
    assert r["bound"] == pytest.approx(1e10 / r["read_bytes"])
    want = model.generate(r["prompt"], max_new_tokens=6, do_sample=False)[0, 6:].tolist()
    assert r["tokens"] == want
