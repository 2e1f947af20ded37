"""Week 03's SFT experiment module (sparkcourse.labs.w03_peft) and its benchmark script, on a few steps and rows."""

from __future__ import annotations

import math
import os
import runpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import ROOT  # noqa: E402

from sparkcourse import datasets_course, models  # noqa: E402
from sparkcourse.labs import w03_peft as sft_lab  # noqa: E402


@pytest.fixture
def keep_threads():
    """The benchmark sets torch's thread count: restore it afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _peft_trainable(method: sft_lab.Method) -> int:
    """Trainable parameters of PEFT's own model for ``method``, counted directly."""
    from peft import LoraConfig, get_peft_model

    model, _ = models.load_tiny_lm()
    cfg = LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM", **method.lora)
    peft_model = get_peft_model(model, cfg)
    n = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert n == peft_model.get_nb_trainable_parameters()[0]
    return n


@pytest.mark.slow
def test_run_sft_experiment_structure_and_counts():
    loads = []

    def load():  # a loader like the spark profile's hub_loader: one fresh model per call
        loads.append(1)
        return models.load_tiny_lm()

    results = sft_lab.run_sft_experiment(
        ["lora", "full"], steps=2, seed=0, eval_rows=4, train_rows=64, logging_steps=1, load=load
    )
    assert list(results) == [sft_lab.BASE, "lora", "full"] and len(loads) == 3
    keys = {"em", "em_by_task", "losses", "seconds", "cpu_seconds", "trainable", "gpu_seconds", "peak_gpu_bytes",
            "pool_used_bytes"}
    for name, r in results.items():
        assert set(r) == keys, name
        assert r["gpu_seconds"] is None and r["peak_gpu_bytes"] is None  # a CPU run: no GPU figures
        assert r["pool_used_bytes"] is None or isinstance(r["pool_used_bytes"], int)
        assert 0.0 <= r["em"] <= 1.0 and r["seconds"] >= 0.0 and r["cpu_seconds"] >= 0.0
        assert set(r["em_by_task"]) <= set(datasets_course.HELD_OUT_TASKS) and r["em_by_task"]
        assert all(0.0 <= v <= 1.0 for v in r["em_by_task"].values())
    assert results[sft_lab.BASE]["losses"] == [] and results[sft_lab.BASE]["trainable"] == 0
    for name in ("lora", "full"):
        losses = results[name]["losses"]
        assert [step for step, _ in losses] == [1, 2], losses
        assert all(math.isfinite(loss) and loss > 0 for _, loss in losses), losses
        assert results[name]["seconds"] > 0
    lora = results["lora"]["trainable"]
    assert lora == _peft_trainable(sft_lab.METHODS["lora"])
    base_model, _ = models.load_tiny_lm()
    assert results["full"]["trainable"] == sum(p.numel() for p in base_model.parameters())
    assert 0 < lora < results["full"]["trainable"]
    text = sft_lab.results_table(results)
    assert len(text.splitlines()) == 4 and "lora" in text and "365,280" in text


@pytest.mark.slow
def test_score_agrees_with_exact_match():
    model, tok = models.load_tiny_lm()
    _, test = sft_lab.sft_data(eval_rows=6)
    em, by_task = sft_lab.score(model, tok, test)
    assert em == datasets_course.exact_match(model, tok, test)
    for task, value in by_task.items():
        rows = test.filter(lambda r, t=task: r["task"] == t)
        assert value == datasets_course.exact_match(model, tok, rows), task


def test_dora_adds_one_magnitude_per_output_row():
    lora = _peft_trainable(sft_lab.METHODS["lora"])
    dora = _peft_trainable(sft_lab.METHODS["dora"])
    model, _ = models.load_tiny_lm()
    linear = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    assert dora - lora == sum(m.out_features for m in linear)


def test_hub_loader_prints_its_label_once(monkeypatch, capsys):
    from sparkcourse import hub

    calls = []

    def fake_causal_lm(model_id, dtype=None, device=None, **kw):
        calls.append((model_id, dtype, device))
        return "model", "tokenizer", f"stand-in: {model_id} architecture"

    monkeypatch.setattr(hub, "causal_lm", fake_causal_lm)
    load = sft_lab.hub_loader("org/name", device="cuda")
    assert load() == ("model", "tokenizer") and load() == ("model", "tokenizer")
    assert calls == [("org/name", torch.float32, "cuda")] * 2
    assert capsys.readouterr().out.count("stand-in: org/name architecture") == 1


def test_sft_train_evaluates_before_and_after(tmp_path):
    model, tok = models.load_tiny_lm()
    train, test = sft_lab.sft_data(eval_rows=8, train_rows=32)
    run = sft_lab.sft_train("e", model, tok, train, 2, 3e-3, dict(r=2, lora_alpha=4), out=str(tmp_path),
                            eval_data=test, per_device_train_batch_size=8, per_device_eval_batch_size=8)
    assert run.eval_before is not None and run.eval_after is not None
    assert math.isfinite(run.eval_before) and math.isfinite(run.eval_after) and run.eval_before > 0
    assert run.gpu_seconds is None and run.peak_gpu_bytes is None


def test_mean_losses():
    runs = [{"a": {"losses": [(10, 2.0), (20, 1.0)]}}, {"a": {"losses": [(10, 4.0), (20, 3.0), (30, 1.0)]}}]
    assert sft_lab.mean_losses(runs, "a") == [(10, 3.0), (20, 2.0)]
    assert sft_lab.mean_losses(runs, "missing") == []


@pytest.mark.slow
def test_benchmark_writes_a_markdown_table(tmp_path, keep_threads):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "sft_tiny.py"))
    out = tmp_path / "sft.md"
    args = "--steps 2 --seeds 0 --eval-rows 4 --train-rows 64 --logging-steps 1 --methods lora".split()
    path = bench["main"]([*args, "--out", str(out)])
    assert path == out and out.with_suffix(".png").stat().st_size > 1000
    text = out.read_text()
    needed_strings = ("--steps 2", "vCPUs", "torch CPU threads: 1", "load average", "torch ", "transformers ")
    for needed in (*needed_strings, "trl ", "peft ", "before fine-tuning", "sft.png"):
        assert needed in text, needed
    tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]
    assert len(tables) == 2, text
    main, by_task = tables
    assert main[0].startswith("| method | trainable params | EM seed 0 | EM mean ± sd")
    for table in tables:
        assert set(table[1]) <= set("|-")
        assert all(line.count("|") == table[0].count("|") for line in table), table
    rows = {line.split("|")[1].strip(): line for line in main[2:]}
    assert list(rows) == ["lora"]
    assert f"| {_peft_trainable(sft_lab.METHODS['lora']):,} |" in rows["lora"]
    assert [line.split("|")[1].strip() for line in by_task[2:]] == [sft_lab.BASE, "lora"]
