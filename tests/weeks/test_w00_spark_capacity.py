"""The planner against FACTS.md's checked numbers and against transformers' own models (meta device)."""

from __future__ import annotations

import pytest
import torch

from sparkcourse import capacity
from sparkcourse.capacity import CONFIGS
from sparkcourse.models import random_llama


def test_bits_per_param_from_format_definitions():
    assert capacity.bits_per_param("nvfp4") == 4.5  # E2M1 + an E4M3 scale per 16
    assert capacity.bits_per_param("mxfp4") == 4.25  # E2M1 + an E8M0 scale per 32
    assert capacity.bits_per_param("int4", 128) == 4.125
    assert capacity.bits_per_param("nf4") == pytest.approx(4.127, abs=5e-4)  # QLoRA paper: 4.127
    assert capacity.bits_per_param("nf4", double_quant=False) == 4.5  # 32-bit absmax per 64
    with pytest.raises(ValueError):
        capacity.bits_per_param("fp6")


def test_facts_numbers():
    llama70 = CONFIGS["meta-llama/Meta-Llama-3-70B"]
    # 2 · 80 layers · 8 KV heads · 128 = 163,840 values per token
    assert capacity.kv_bytes_per_token(llama70, 1) == 163_840
    assert capacity.kv_bytes_per_token(llama70, 2) / 1e6 == pytest.approx(0.33, abs=0.005)
    assert capacity.weight_bytes(70e9, "nvfp4") / 1e9 == pytest.approx(39.4, abs=0.05)
    assert capacity.weight_bytes(200e9, "nvfp4") / 1e9 == pytest.approx(112.5)
    assert capacity.training_bytes(1, "full") == 16
    assert capacity.largest_trainable() / 1e9 == pytest.approx(8.0)


def _meta_model(cls_config, cls_model, cfg: dict):
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    config = cls_config(**fields)
    with torch.device("meta"):
        return cls_model(config)


@pytest.mark.parametrize("name", ["meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B"])
def test_dense_counts_match_transformers(name):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = _meta_model(LlamaConfig, LlamaForCausalLM, CONFIGS[name])
    assert capacity.param_count(CONFIGS[name]).total == sum(p.numel() for p in model.parameters())


def test_mixtral_counts_match_transformers():
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = CONFIGS["mistralai/Mixtral-8x7B-v0.1"]
    model = _meta_model(MixtralConfig, MixtralForCausalLM, cfg)
    total = sum(p.numel() for p in model.parameters())
    count = capacity.param_count(cfg)
    assert count.total == total
    per_expert = 3 * cfg["hidden_size"] * cfg["intermediate_size"]
    assert count.active == total - cfg["num_hidden_layers"] * (8 - 2) * per_expert


def test_deepseek_v3_counts_match_transformers():
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    cfg = dict(CONFIGS["deepseek-ai/DeepSeek-V3"])
    # Same structure with fewer layers and experts keeps the meta model quick; the formula is per layer.
    small = dict(cfg, num_hidden_layers=5, n_routed_experts=16)
    model = _meta_model(DeepseekV3Config, DeepseekV3ForCausalLM, small)
    assert capacity.param_count(small).total == sum(p.numel() for p in model.parameters())
    full = capacity.param_count(cfg)
    assert full.total / 1e9 == pytest.approx(671, abs=1)  # DeepSeek-V3 report: 671B total
    assert full.active / 1e9 == pytest.approx(37, abs=1)  # and 37B activated per token


def test_random_configs_match_transformers():
    from transformers import LlamaConfig, LlamaForCausalLM

    for tie, heads, kv, head_dim in ((True, 4, 2, None), (False, 6, 3, 10), (True, 5, 5, 6)):
        cfg = dict(vocab_size=211, hidden_size=heads * 8, intermediate_size=53, num_hidden_layers=3,
                   num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tie)
        if head_dim:
            cfg["head_dim"] = head_dim
        model = _meta_model(LlamaConfig, LlamaForCausalLM, cfg)
        assert capacity.param_count(cfg).total == sum(p.numel() for p in model.parameters()), cfg
        kv_values = 2 * cfg["num_hidden_layers"] * kv * (head_dim or 8)
        assert capacity.kv_bytes_per_token(cfg, 1) == kv_values


def test_lora_params_match_peft():
    from peft import LoraConfig, get_peft_model

    cfg = dict(vocab_size=97, hidden_size=48, intermediate_size=60, num_hidden_layers=2, num_attention_heads=6,
               num_key_value_heads=2, tie_word_embeddings=False)
    model = random_llama(None, **cfg)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert capacity.lora_params(cfg, 4) == trainable


def test_max_context_and_errors():
    cfg = CONFIGS["meta-llama/Meta-Llama-3-70B"]
    assert capacity.max_context(10e9, cfg, "bf16") == 0
    ctx = capacity.max_context(128e9, cfg, "nvfp4", 1.0)
    used = capacity.weight_bytes(capacity.param_count(cfg).total, "nvfp4") + ctx * 163_840
    assert used <= 128e9 < used + 163_840
    with pytest.raises(ValueError):
        capacity.training_bytes(1, "galore")
    with pytest.raises(ValueError):
        capacity.param_count({"model_type": "rwkv", "hidden_size": 1, "num_hidden_layers": 1, "vocab_size": 1})


def test_usable_context_caps_at_trained_context_and_subtracts_reserve():
    """FACTS.md: a context that fits is not one the model supports; Llama-3 was trained for 8,192 tokens
    (Meta's config.json), Llama-3.1 for 131,072 (the shipped config)."""
    import json
    from pathlib import Path

    import sparkcourse

    cfg70 = CONFIGS["meta-llama/Meta-Llama-3-70B"]
    assert cfg70["max_position_embeddings"] == 8192
    assert CONFIGS["meta-llama/Meta-Llama-3-8B"]["max_position_embeddings"] == 8192
    mem = capacity.max_context(capacity.SPARK_MEMORY_BYTES, cfg70, "nvfp4", 1.0)
    assert mem > 500_000  # memory alone would allow this
    assert capacity.usable_context(capacity.SPARK_MEMORY_BYTES, cfg70, "nvfp4", 1.0) == 8192
    shipped = json.loads((Path(sparkcourse.__file__).parent / "data" / "configs" /
                          "meta-llama--Llama-3.1-8B-Instruct.json").read_text())
    assert shipped["max_position_embeddings"] == 131072
    as31 = cfg70 | {"max_position_embeddings": shipped["max_position_embeddings"]}
    assert capacity.usable_context(capacity.SPARK_MEMORY_BYTES, as31, "nvfp4", 1.0) == 131072
    # the reserve comes off the budget: 10 GB less is 10e9 / 163,840 B fewer tokens of FP8 cache
    no_cap = {k: v for k, v in cfg70.items() if k != "max_position_embeddings"}
    full = capacity.usable_context(capacity.SPARK_MEMORY_BYTES, no_cap, "nvfp4", 1.0)
    less = capacity.usable_context(capacity.SPARK_MEMORY_BYTES, no_cap, "nvfp4", 1.0, reserve_bytes=10e9)
    assert full == mem and abs((full - less) - 10e9 / 163_840) <= 1
