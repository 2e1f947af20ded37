"""The spark lane's hub module: offline flags by profile, shipped stand-in configs, stand-ins, honest skips."""

from __future__ import annotations

import json
import os

import pytest
import torch

import sparkcourse
from sparkcourse import capacity, gpu, hub, profile

TINY = {"_source": "test", "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
        "max_position_embeddings": 256, "torch_dtype": "float32"}


@pytest.fixture
def clean_flags(monkeypatch):
    for flag in profile.OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    yield monkeypatch


def test_offline_flags_only_in_tiny(clean_flags):
    clean_flags.setenv("SPARKCOURSE_PROFILE", "spark")
    sparkcourse.setup(quiet=True)
    assert not any(os.environ.get(f) for f in profile.OFFLINE_FLAGS), "spark must never be forced offline"
    clean_flags.setenv("SPARKCOURSE_PROFILE", "tiny")
    sparkcourse.setup(quiet=True)
    assert all(os.environ.get(f) == "1" for f in profile.OFFLINE_FLAGS)
    clean_flags.setenv("HF_HUB_OFFLINE", "0")  # a user's own setting stays, in either profile
    assert profile.offline_if_tiny() and os.environ["HF_HUB_OFFLINE"] == "0"


def test_no_module_forces_offline_outside_tiny():
    """Only the profile's helper sets the flags; every other mention is reading or passing them on."""
    root = sparkcourse.__file__.rsplit("/", 1)[0]
    offenders = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "profile.py":
                text = open(os.path.join(dirpath, name)).read()
                if 'setdefault("HF_HUB_OFFLINE"' in text or 'environ["HF_HUB_OFFLINE"] =' in text:
                    offenders.append(name)
    assert not offenders, f"forces HF offline mode outside the tiny profile: {offenders}"


def test_standin_flag(monkeypatch):
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    assert hub.standin()
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "0")
    assert not hub.standin()


def test_shipped_configs_cite_their_source_and_match_known_counts():
    configs = hub.shipped_configs()
    assert {"meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
            "cross-encoder/ms-marco-MiniLM-L-6-v2"} <= set(configs)
    for model_id, values in configs.items():
        src = values["_source"]
        assert f"https://huggingface.co/{model_id}" in src and "config.json" in src and "written 20" in src
    from transformers import AutoModelForSequenceClassification

    counts = {mid: hub.meta_params(hub.make_config(v), AutoModelForSequenceClassification
                                   if v["model_type"] == "bert" else None) for mid, v in configs.items()}
    # Llama-3.1-8B has Llama-3-8B's architecture: the planner's count (week 00) and the known 8,030,261,248
    llama = configs["meta-llama/Llama-3.1-8B-Instruct"]
    assert counts["meta-llama/Llama-3.1-8B-Instruct"] == 8_030_261_248
    assert counts["meta-llama/Llama-3.1-8B-Instruct"] == capacity.param_count(
        capacity.CONFIGS["meta-llama/Meta-Llama-3-8B"]).total
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings"):
        assert llama[key] == capacity.CONFIGS["meta-llama/Meta-Llama-3-8B"][key], key
    assert hub.make_config(llama).max_position_embeddings == 131_072  # FACTS.md: Llama-3.1's trained context
    # Qwen2.5-1.5B: 1.54B parameters, 1.31B without the (tied) embeddings (its model card)
    qwen = counts["Qwen/Qwen2.5-1.5B-Instruct"]
    emb = configs["Qwen/Qwen2.5-1.5B-Instruct"]["vocab_size"] * configs["Qwen/Qwen2.5-1.5B-Instruct"]["hidden_size"]
    assert round(qwen / 1e9, 2) == 1.54 and round((qwen - emb) / 1e9, 2) == 1.31
    # the cross-encoder is MiniLM-L6-H384 (all-MiniLM-L6-v2's 22.7M) plus a one-output head
    assert counts["cross-encoder/ms-marco-MiniLM-L-6-v2"] == 22_713_216 + 384 + 1


def test_layers_that_fit():
    values = hub.shipped_config("meta-llama/Llama-3.1-8B-Instruct")
    assert hub.layers_that_fit(values, None, 2) == 32
    assert hub.layers_that_fit(values, 100e9, 2) == 32
    one, two = (hub.meta_params(hub.make_config(values, num_hidden_layers=n)) for n in (1, 2))
    per_layer, rest = two - one, 2 * one - two
    assert per_layer == 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # q o, k v, MLP, norms
    assert hub.layers_that_fit(values, (rest + 10.5 * per_layer) * 2, 2) == 10
    assert hub.layers_that_fit(values, rest, 2) == 0


@pytest.fixture
def tiny_configs(tmp_path, monkeypatch):
    (tmp_path / "test--tiny-llama.json").write_text(json.dumps(TINY))
    monkeypatch.setattr(hub, "CONFIG_DIR", tmp_path)
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    return tmp_path


def test_tiny_standin_runs_on_cpu(tiny_configs):
    model, tok, label = hub.causal_lm("test/tiny-llama")
    assert label.startswith("stand-in: test/tiny-llama architecture, random weights, 4 of 4 layers")
    assert "course tokenizer" in label and not model.training
    assert (model.config.eos_token_id, model.generation_config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    ids = tok("Spark", return_tensors="pt")
    assert model(**ids).logits.shape == (1, ids["input_ids"].shape[1], 1000)
    again, _, _ = hub.causal_lm("test/tiny-llama")
    assert torch.equal(model.lm_head.weight, again.lm_head.weight), "stand-in weights are seeded"
    small, _, label = hub.causal_lm("test/tiny-llama", max_bytes=700_000)  # embeddings + head ≈ 0.5 MB in fp32
    assert small.config.num_hidden_layers == 1 and "1 of 4 layers" in label
    with pytest.raises(hub.Unavailable, match="not even one layer"):
        hub.causal_lm("test/tiny-llama", max_bytes=1000)
    with pytest.raises(hub.Unavailable, match="no stand-in for nope/none"):
        hub.causal_lm("nope/none")
    if not torch.cuda.is_available():
        with pytest.raises(hub.Unavailable, match="no CUDA GPU"):
            hub.causal_lm("test/tiny-llama", device="cuda")


def test_standin_that_cannot_be_built_is_unavailable(tiny_configs, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", oom)
    with pytest.raises(hub.Unavailable) as info:
        hub.causal_lm("test/tiny-llama")
    hub.report(info.value)
    assert capsys.readouterr().out.startswith("SKIPPED: stand-in of test/tiny-llama could not be built "
                                              "(OutOfMemoryError: CUDA out of memory.") and "max_bytes" in info.value.fix


def test_standin_through_from_pretrained_options(tiny_configs):
    """quantization_config goes through a saved copy and from_pretrained, as a real load does."""
    from transformers import BitsAndBytesConfig

    qconf = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model, _, label = hub.causal_lm("test/tiny-llama", dtype=torch.float32, quantization_config=qconf)
    import bitsandbytes as bnb

    assert isinstance(model.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit) and "4 of 4 layers" in label
    assert f"({hub.meta_params(hub.make_config(TINY)) / 1e6:.1f}M parameters)" in label  # not the packed count


def test_free_bytes_is_the_unified_pool_on_a_spark(monkeypatch):
    """cudaMemGetInfo under-reports on the GB10's unified memory: take MemAvailable when it is larger."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(20e9), int(120e9)))
    monkeypatch.setattr(gpu, "meminfo_bytes", lambda field="MemTotal", path="/proc/meminfo": int(100e9))
    for unified, want in ((True, 100e9), (False, 20e9)):
        info = gpu.DeviceInfo("spark" if unified else "cuda", "NVIDIA GB10", int(128e9), unified, (12, 1))
        monkeypatch.setattr(gpu, "detect", lambda info=info: info)
        assert hub.free_bytes("cuda") == want
    assert hub.free_bytes("cpu") == 100e9


def _offline_error():
    try:
        raise ConnectionError("Max retries exceeded: Name or service not known")
    except ConnectionError as cause:
        try:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from cause
        except OSError as exc:
            return exc


@pytest.mark.parametrize("error, expect", [
    (_offline_error(), "check the network"),
    (OSError("You are trying to access a gated repo. Make sure to have access to it"), "accept the licence"),
    (OSError("nope/none is not a local folder and is not a valid model identifier"), "check the id"),
    (ImportError("No module named 'bitsandbytes'"), "package is missing"),
])
def test_unavailable_message(monkeypatch, capsys, error, expect):
    """A failing download becomes Unavailable with the fix, and report() prints one SKIPPED line."""
    from transformers import AutoTokenizer

    for flag in profile.OFFLINE_FLAGS + ("TRANSFORMERS_OFFLINE",):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.delenv("SPARKCOURSE_STANDIN", raising=False)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fail)
    with pytest.raises(hub.Unavailable) as info:
        hub.causal_lm("meta-llama/Llama-3.1-8B-Instruct")
    assert info.value.what.startswith("meta-llama/Llama-3.1-8B-Instruct could not be loaded")
    assert expect in info.value.fix and "SPARKCOURSE_STANDIN=1" in info.value.fix
    hub.report(info.value)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("SKIPPED: meta-llama/Llama-3.1-8B-Instruct") and " — " in out[0]


def test_offline_flag_named_in_the_fix(monkeypatch):
    for flag in profile.OFFLINE_FLAGS + ("TRANSFORMERS_OFFLINE",):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fix = hub.fix_for("Qwen/Qwen2.5-1.5B-Instruct", OSError("not cached"))
    assert "offline mode is on (HF_HUB_OFFLINE)" in fix and "unset HF_HUB_OFFLINE" in fix


def test_dataset_falls_back_with_a_label(monkeypatch):
    import datasets

    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    data, label = hub.dataset("trl-lib/ultrafeedback_binarized", "train", lambda: [1, 2], about="course pairs")
    assert data == [1, 2] and label == "stand-in: course pairs instead of trl-lib/ultrafeedback_binarized"
    monkeypatch.delenv("SPARKCOURSE_STANDIN")

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    data, label = hub.dataset("trl-lib/ultrafeedback_binarized", "train", lambda: [3])
    assert data == [3] and label.startswith("trl-lib/ultrafeedback_binarized unavailable (ConnectionError")
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: f"{name}:{split}")
    assert hub.dataset("x/y", "train[:10]", lambda: None) == ("x/y:train[:10]", "x/y (train[:10])")


def test_cross_encoder_standin(monkeypatch):
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    ce, label = hub.cross_encoder("cross-encoder/ms-marco-MiniLM-L-6-v2", device="cpu")
    scores = ce.predict([("what is NVFP4?", "NVFP4 stores 4.5 bits per value"), ("a", "b")])
    assert len(scores) == 2 and "6 of 6 layers" in label and label.startswith("stand-in:")
