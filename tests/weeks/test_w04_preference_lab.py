"""Week 04's training lab (sparkcourse.labs.w04_preference) and its CPU benchmark, on a few rows and 2 steps."""

from __future__ import annotations

import math
import os
import runpy
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from conftest import ROOT  # noqa: E402

from sparkcourse.labs import w04_preference as pl  # noqa: E402
from sparkcourse.models import TINY_LM_PATH  # noqa: E402
from sparkcourse.reference import w04_preference as ref  # noqa: E402

ANSWERS = dict(logps=ref.sequence_logps, dpo_loss=ref.dpo_loss, simpo_loss=ref.simpo_loss)

BENCH = ROOT / "benchmarks" / "preference_tiny.py"
needs_tiny_lm = pytest.mark.skipif(
    not (TINY_LM_PATH / "config.json").exists(), reason="tiny course LM missing"
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs():
    import datasets

    datasets.disable_progress_bars()
    return pl.load_pairs("train", chat=True, n=16), pl.load_pairs("test", n=6)


def test_held_out_wording_rewrites_the_prompt_only():
    plain = pl.load_pairs("test", "pre-training", n=3)
    held = pl.load_pairs("test", "held-out", n=3)
    for a, b in zip(plain, held, strict=True):
        x, y = a["prompt"].removeprefix("What is ").removesuffix("?").split(" + ")
        assert b["prompt"] == f"Add {x} and {y}."
        assert (a["chosen"], a["rejected"]) == (b["chosen"], b["rejected"])
        assert int(a["chosen"]) == int(x) + int(y) != int(a["rejected"])
    chat = pl.load_pairs("train", chat=True, n=2)
    assert chat[0]["prompt"][0]["role"] == "user" and chat[0]["chosen"][0]["role"] == "assistant"
    with pytest.raises(ValueError):
        pl.load_pairs("test", "klingon")


def test_the_lab_scores_with_the_functions_it_is_given():
    """The lab holds no answer of week 04 (sequence_logps, dpo_loss, simpo_loss): the caller's do the work."""
    calls = []

    def spy(name):
        def fn(*args, **kw):
            calls.append(name)
            return ANSWERS[name](*args, **kw)

        return fn

    spies = {name: spy(name) for name in ANSWERS}
    small = dict(hidden=32, layers=1, batch=2, length=8, steps=0)
    pl.measure_step(False, **small, **spies)
    pl.measure_step(True, **small, **spies)
    assert calls == ["logps", "simpo_loss", "logps", "logps", "dpo_loss"]
    source = Path(pl.__file__).read_text()
    assert "log_softmax" not in source and "logsigmoid" not in source
    with pytest.raises(TypeError):
        pl.measure_step(False, **small)  # the answers are required


@needs_tiny_lm
@pytest.mark.parametrize("method", ["DPO", "ORPO"])  # one with a reference model, one reference-free
def test_run_method_returns_finite_fractions(pairs, method):
    train, test = pairs
    r = pl.run_method(method, train, test, steps=2, logps=ref.sequence_logps, per_device_train_batch_size=4)
    for key in ("ranking acc", "exact match"):
        assert 0.0 <= r[key] <= 1.0 and math.isfinite(r[key]), (key, r)
        assert r[key] * len(test) == pytest.approx(round(r[key] * len(test))), "a fraction of the 6 test rows"
    assert r["train s"] > 0


def test_measure_step_counts_the_reference_weights():
    kw = dict(hidden=32, layers=1, batch=2, length=8, steps=1, **ANSWERS)
    with_ref, without = pl.measure_step(True, **kw), pl.measure_step(False, **kw)
    model = pl.small_llama(hidden=32, layers=1, length=8)
    independent = sum(p.numel() * p.element_size() for p in model.parameters())
    assert without["reference weights"] == 0
    assert (
        with_ref["reference weights"]
        == independent
        == with_ref["policy weights"]
        == without["policy weights"]
    )
    assert with_ref["gradients"] == independent
    assert with_ref["AdamW state"] == 2 * independent  # exp_avg and exp_avg_sq, fp32
    assert with_ref["activations"] > 0 and without["activations"] > 0
    s = pl.memory_summary({"DPO (reference)": with_ref, "SimPO/ORPO (no reference)": without})
    assert 0.5 < s["memory ratio"] < 1 and s["memory ratio without activations"] == pytest.approx(0.8)


def test_tensor_bytes_counts_a_shared_storage_once():
    t = torch.zeros(10, dtype=torch.float64)
    assert pl.tensor_bytes([t, t[2:5], t.view(2, 5)]) == 80
    assert pl.tensor_bytes([t, torch.zeros(3)]) == 92


@pytest.mark.slow
@needs_tiny_lm
def test_benchmark_writes_markdown_and_png(tmp_path):
    out = tmp_path / "bench.md"
    bench = runpy.run_path(str(BENCH))
    rc = bench["main"](
        [
            "--steps",
            "2",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--methods",
            "SimPO",
            "--wordings",
            "held-out",
            "--train-rows",
            "8",
            "--test-rows",
            "4",
            "--memory-steps",
            "1",
            "--grid",
            "SimPO:1e-4",
            "SimPO:2e-4",
        ]
    )
    assert rc == 0
    text = out.read_text()
    for needle in (
        "date:",
        "command:",
        "machine:",
        "vCPUs",
        "load average",
        "shared",
        "torch ",
        "trl ",
        "reference-free / DPO memory",
        "step time",
        "| SimPO |",
        "| base (no training) |",
        "| ranking acc |",
        "held-out wording",
        "reference weights (MB)",
        "Tuning on the validation pairs",
        "| SimPO | 0.0001 | 2 | 2 |",
        "**chosen**",
        "scored once on the 4 test pairs",
    ):
        assert needle in text, needle
    assert (tmp_path / "bench.png").stat().st_size > 1000


@pytest.mark.slow
@needs_tiny_lm
def test_trl_memory_measurement_runs_every_case_on_cpu(pairs):
    """The spark cell's measurement, on the tiny course LM on CPU (the GB fields need CUDA and are None)."""
    from sparkcourse.models import load_tiny_lm

    def build(dtype):
        model, tok = load_tiny_lm(dtype)
        return model, tok, "tiny course LM"

    rows = pl.measure_trl_memory(build, pairs[0].select(range(8)), steps=2, batch=2, max_length=64, warmup=1,
                                 device="cpu")
    assert [(r["tuning"], r["loss"]) for r in rows.values()] == list(pl.GPU_CASES)
    full = [r for r in rows.values() if r["tuning"] == "full"]
    lora = [r for r in rows.values() if r["tuning"] == "LoRA"]
    assert all(r["trainable"] == r["params"] for r in full)  # full fine-tuning trains every weight
    assert all(0 < r["trainable"] < r["params"] / 2 for r in lora)  # LoRA: the adapters only
    assert all(r["peak GB"] is None and r["step s"] > 0 for r in rows.values())
    assert "reference" in pl.format_trl_memory(rows)
