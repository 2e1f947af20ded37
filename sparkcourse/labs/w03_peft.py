"""Week 03's SFT experiment: full fine-tuning, LoRA, DoRA and LoRA+NEFTune of the tiny course Llama (TRL).

The model is ``sparkcourse.models.load_tiny_lm()``; the training rows are the instruction tasks it was not
pre-trained on (``datasets_course.HELD_OUT_TASKS``), and the metric is the exact match of the greedy answer on
a fixed sample of their test rows. ``run_sft_experiment`` is what the notebook (section 5) and
``benchmarks/sft_tiny.py`` call; ``sft_train`` is one ``SFTTrainer`` run, also used with an 8B model on a Spark.
In the ``spark`` profile the notebook runs the same experiment on a hub model (``SPARK_SFT_MODEL``, loaded by
``hub_loader``) on the GPU, with ``SPARK_METHODS``; every run then also reports CUDA-event seconds, the peak of
``torch.cuda.max_memory_allocated`` and how much of the unified pool (/proc/meminfo) training took.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from sparkcourse import datasets_course, gpu, models

Loader = Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]


@dataclass(frozen=True)
class Method:
    """One fine-tuning recipe: learning rate, LoRA kwargs (None: full fine-tuning), NEFTune alpha."""

    lr: float
    lora: Mapping[str, Any] | None = None
    neftune: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more SFTConfig settings for this method only


METHODS: dict[str, Method] = {
    "full": Method(lr=1e-3),
    "lora": Method(lr=3e-3, lora=dict(r=8, lora_alpha=16)),
    "dora": Method(lr=3e-3, lora=dict(r=8, lora_alpha=16, use_dora=True)),
    "lora+neftune": Method(lr=3e-3, lora=dict(r=8, lora_alpha=16), neftune=5.0),
}
# The spark profile's run: a 1.5B instruct model on the GPU. Learning rates follow the usual recipe (LoRA about
# 10x full fine-tuning: Schulman et al., "LoRA Without Regret", Thinking Machines Lab, 2025); not swept here.
SPARK_SFT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
SPARK_METHODS: dict[str, Method] = {
    "full": Method(lr=1e-5),
    "lora": Method(lr=1e-4, lora=dict(r=16, lora_alpha=32)),
    "dora": Method(lr=1e-4, lora=dict(r=16, lora_alpha=32, use_dora=True)),
    "lora+neftune": Method(lr=1e-4, lora=dict(r=16, lora_alpha=32), neftune=5.0),
}
BASE = "base (no fine-tuning)"
BATCH_SIZE = 32
MAX_LENGTH = 128


def trainable_params(model: torch.nn.Module) -> int:
    """Number of parameters that require a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sft_data(
    eval_rows: int = 120, train_rows: int | None = None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The held-out tasks in conversational format: (train rows, the first ``eval_rows`` shuffled test rows).

    Both shuffles use seed 0, so every run and seed is scored on the same test rows.
    """
    keep = set(datasets_course.HELD_OUT_TASKS)
    train = datasets_course.load_instruct("train", chat=True).filter(lambda r: r["task"] in keep)
    test = datasets_course.load_instruct("test", chat=True).filter(lambda r: r["task"] in keep)
    if len(train) == 0 or len(test) == 0:
        raise RuntimeError(
            f"no rows of the held-out tasks {sorted(keep)} in the course data: rebuild it with "
            "`python tools/make_tiny_lm.py`"
        )
    train = train.shuffle(seed=0)
    if train_rows is not None:
        train = train.select(range(min(train_rows, len(train))))
    return train, test.shuffle(seed=0).select(range(min(eval_rows, len(test))))


@dataclass
class SFTResult:
    """One training run: the trained model, its logged losses, wall-clock and CPU seconds of ``train()``.

    On a GPU also: ``gpu_seconds`` (CUDA events around ``train()``) and ``peak_gpu_bytes``
    (``torch.cuda.max_memory_allocated`` during ``train()``: weights, adapters, optimizer state, activations).
    ``available_low``: the lowest /proc/meminfo MemAvailable seen at a step's end (the pool a Spark's GPU
    shares). ``eval_before``/``eval_after``: the loss on ``eval_data`` before and after training, if given.
    """

    model: PreTrainedModel
    losses: list[tuple[int, float]]
    seconds: float
    cpu_seconds: float
    gpu_seconds: float | None = None
    peak_gpu_bytes: int | None = None
    available_low: int | None = None
    eval_before: float | None = None
    eval_after: float | None = None


class PoolWatch(TrainerCallback):
    """Remembers the lowest MemAvailable of /proc/meminfo at the end of each step (unified memory's use)."""

    def __init__(self) -> None:
        self.low = gpu.meminfo_bytes("MemAvailable")

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 - TrainerCallback's hook
        now = gpu.meminfo_bytes("MemAvailable")
        if now is not None and (self.low is None or now < self.low):
            self.low = now


def on_cuda(model: torch.nn.Module) -> bool:
    """True when the model's parameters live on a CUDA device."""
    return any(p.is_cuda for p in model.parameters())


def sft_train(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: datasets.Dataset,
    steps: int,
    lr: float,
    lora_kwargs: Mapping[str, Any] | None = None,
    neftune: float | None = None,
    seed: int = 0,
    out: str | None = None,
    print_logs: bool = False,
    eval_data: datasets.Dataset | None = None,
    **overrides: Any,
) -> SFTResult:
    """One SFTTrainer run: the trained model, [(step, loss)], wall-clock and CPU seconds of ``train()``.

    ``lora_kwargs`` None is full fine-tuning (the model is trained in place); otherwise they go to PEFT's
    ``LoraConfig``, on all linear layers unless they name ``target_modules``. ``overrides`` go to
    ``SFTConfig``; ``print_logs`` keeps the Trainer's printed log lines (off: the losses are still returned). On a shared machine the CPU seconds are
    the steadier cost measure: wall-clock time also counts the time the process waited for a core. On a GPU the
    run is also timed with CUDA events and its peak memory measured (the peak statistics are reset first).
    ``eval_data`` (prompt/completion rows): ``trainer.evaluate()`` before and after training, on the completion
    tokens, as ``eval_before``/``eval_after``.
    """
    import peft
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    args = sft_config(f"{out or tempfile.mkdtemp(prefix='sft-03-')}/{name}", steps, lr, neftune, seed, **overrides)
    peft_config = (
        None
        if lora_kwargs is None
        else peft.LoraConfig(**(dict(target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
                                | dict(lora_kwargs)))
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if not print_logs:
        trainer.remove_callback(PrinterCallback)
    watch = PoolWatch()
    trainer.add_callback(watch)
    eval_before = float(trainer.evaluate()["eval_loss"]) if eval_data is not None else None
    cuda = on_cuda(trainer.model)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    if cuda:
        end.record()
        end.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    gpu_seconds = start.elapsed_time(end) / 1e3 if cuda else None
    peak = torch.cuda.max_memory_allocated() if cuda else None
    eval_after = float(trainer.evaluate()["eval_loss"]) if eval_data is not None else None
    losses = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    return SFTResult(trainer.model, losses, seconds, cpu_seconds, gpu_seconds, peak, watch.low, eval_before,
                     eval_after)


def sft_config(output_dir: str, steps: int, lr: float, neftune: float | None = None, seed: int = 0,
               **overrides: Any) -> Any:
    """The ``SFTConfig`` of every run: constant learning rate, no saving or reporting, bf16 on a GPU that has it.

    ``overrides``: other ``SFTConfig`` fields, or new values for the batch size, ``max_length``, activation
    checkpointing, bf16 and ``logging_steps``."""
    from trl import SFTConfig

    gpu = torch.cuda.is_available()
    settings = dict(
        per_device_train_batch_size=BATCH_SIZE,
        max_length=MAX_LENGTH,
        activation_checkpointing=False,
        bf16=gpu and torch.cuda.is_bf16_supported(),
        logging_steps=10,
    )
    return SFTConfig(
        output_dir=output_dir,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        use_cpu=not gpu,
        neftune_noise_alpha=neftune,
        **(settings | overrides),
    )


def score(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, test: datasets.Dataset
) -> tuple[float, dict[str, float]]:
    """Exact match on all of ``test`` and on each task's rows, from one pass of greedy answers.

    The rule is ``datasets_course.exact_match``'s: the stripped answer equals the reference completion.
    """
    answers = models.generate_batch(model, tokenizer, [row[-1]["content"] for row in test["prompt"]])
    right = [a == ref[-1]["content"].strip() for a, ref in zip(answers, test["completion"], strict=True)]
    by_task: dict[str, list[bool]] = {}
    for task, ok in zip(test["task"], right, strict=True):
        by_task.setdefault(task, []).append(ok)
    return sum(right) / len(right), {t: sum(v) / len(v) for t, v in sorted(by_task.items())}


def run_sft_experiment(
    methods: Mapping[str, Method] | Sequence[str] = tuple(METHODS),
    steps: int = 150,
    seed: int = 0,
    eval_rows: int = 120,
    train_rows: int | None = None,
    logging_steps: int = 10,
    base: bool = True,
    verbose: bool = False,
    load: Loader | None = None,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Fine-tune a fresh tiny course model with each method; score exact match on the held-out test rows.

    ``methods``: names from ``METHODS`` or a ``{name: Method}`` mapping. Returns ``{name: {"em", "em_by_task",
    "losses", "seconds", "cpu_seconds", "trainable", "gpu_seconds", "peak_gpu_bytes", "pool_used_bytes"}}``
    with ``losses`` a list of (step, loss) and the seconds those of ``train()``; the GPU entries are None on a
    CPU; ``pool_used_bytes`` is MemAvailable before the model was loaded minus its lowest value while training
    (what the run took from a unified pool; None where /proc/meminfo is unreadable). With ``base`` the first
    entry (``BASE``) is the model before fine-tuning (no losses, 0 s, 0 trainable). ``seed`` sets the LoRA
    initialisation and the order of the training rows; the test rows are the same for every seed. ``load``
    returns a fresh ``(model, tokenizer)`` per method (default: the tiny course model; ``hub_loader`` for a hub
    model on the GPU). ``overrides`` go to ``SFTConfig``.
    """
    load = load or models.load_tiny_lm
    if not isinstance(methods, Mapping):
        methods = {name: METHODS[name] for name in methods}
    train, test = sft_data(eval_rows, train_rows)
    if verbose:
        print(f"tasks {datasets_course.HELD_OUT_TASKS}: {len(train)} training rows, {len(test)} test rows")
    results: dict[str, dict[str, Any]] = {}
    if base:
        model0, tok = load()
        em, by_task = score(model0, tok, test)
        results[BASE] = dict(em=em, em_by_task=by_task, losses=[], seconds=0.0, cpu_seconds=0.0, trainable=0,
                             gpu_seconds=None, peak_gpu_bytes=None, pool_used_bytes=None)
        del model0
        free_memory()
    for name, m in methods.items():
        torch.manual_seed(seed)  # PEFT initialises lora_A from torch's global generator
        available0 = gpu.meminfo_bytes("MemAvailable")
        model, tok = load()
        model.train()
        run = sft_train(
            name,
            model,
            tok,
            train,
            steps,
            m.lr,
            m.lora,
            m.neftune,
            seed=seed,
            logging_steps=logging_steps,
            **(dict(m.extra) | overrides),
        )
        em, by_task = score(run.model, tok, test)
        pool_used = (available0 - run.available_low) if None not in (available0, run.available_low) else None
        results[name] = dict(
            em=em,
            em_by_task=by_task,
            losses=run.losses,
            seconds=run.seconds,
            cpu_seconds=run.cpu_seconds,
            trainable=trainable_params(run.model),
            gpu_seconds=run.gpu_seconds,
            peak_gpu_bytes=run.peak_gpu_bytes,
            pool_used_bytes=pool_used,
        )
        if verbose:
            where = (f"{run.gpu_seconds:.1f} s on the GPU (CUDA events), peak {run.peak_gpu_bytes / 1e9:.2f} GB"
                     if run.gpu_seconds is not None else f"{run.cpu_seconds:.1f} s CPU")
            print(f"{name:14s} seed {seed}: {run.seconds:.1f} s ({where}), exact match {em:.3f}")
        del model, run
        free_memory()
    return results


def free_memory() -> None:
    """Give back what dropped models left: ``gc.collect()`` (reference cycles) and, on a GPU, the cached blocks."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hub_loader(model_id: str = SPARK_SFT_MODEL, device: str = "cuda", dtype: torch.dtype = torch.float32,
               echo: bool = True) -> Loader:
    """A ``load`` for ``run_sft_experiment``: ``sparkcourse.hub.causal_lm`` (the real model, or a labelled
    stand-in with ``SPARKCOURSE_STANDIN=1``); prints its label once. Raises ``hub.Unavailable`` if it cannot be
    had. Float32 weights: full fine-tuning then keeps FP32 master weights and trains under BF16 autocast."""
    from sparkcourse import hub

    said: list[str] = []

    def load() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        model, tok, label = hub.causal_lm(model_id, dtype=dtype, device=device)
        if echo and not said:
            print(label)
            said.append(label)
        return model, tok

    return load


def results_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One run's results as text: trainable parameters, exact match (all, per task), loss, wall and CPU s;
    on a GPU also CUDA-event seconds, peak allocated GB and (unified memory) GB taken from the pool."""
    tasks = list(next(iter(results.values()))["em_by_task"])
    on_gpu = any(r.get("gpu_seconds") is not None for r in results.values())
    unified = on_gpu and gpu.detect().unified
    head = "".join(f" {t[:15]:>15s}" for t in tasks)
    extra = f" {'GPU s':>7s} {'peak GB':>8s}" if on_gpu else ""
    extra += f" {'pool GB':>8s}" if unified else ""
    lines = [
        f"{'method':22s} {'trainable':>10s} {'exact match':>12s}{head} {'final loss':>11s} "
        f"{'seconds':>8s} {'CPU s':>6s}{extra}"
    ]

    def num(value: float | None, scale: float, width: int, digits: int) -> str:
        return f" {'-':>{width}s}" if value is None else f" {value / scale:{width}.{digits}f}"

    for name, r in results.items():
        last = f"{r['losses'][-1][1]:.3f}" if r["losses"] else "-"
        per_task = "".join(f" {r['em_by_task'][t]:15.3f}" for t in tasks)
        more = ""
        if on_gpu:
            more = num(r.get("gpu_seconds"), 1, 7, 1) + num(r.get("peak_gpu_bytes"), 1e9, 8, 2)
        if unified:
            more += num(r.get("pool_used_bytes"), 1e9, 8, 2)
        lines.append(
            f"{name:22s} {r['trainable']:10,d} {r['em']:12.3f}{per_task} {last:>11s} "
            f"{r['seconds']:8.1f} {r['cpu_seconds']:6.1f}{more}"
        )
    return "\n".join(lines)


def mean_losses(runs: Sequence[Mapping[str, Mapping[str, Any]]], name: str) -> list[tuple[int, float]]:
    """The loss curve of method ``name`` averaged over several runs (steps where every run logged a loss)."""
    curves = [dict(run[name]["losses"]) for run in runs if name in run and run[name]["losses"]]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, statistics.fmean(c[s] for c in curves)) for s in steps]


def plot_losses(runs: Sequence[Mapping[str, Mapping[str, Any]]], title: str = "SFT of the tiny course model"):
    """A matplotlib figure of the training loss per method (mean over ``runs``, log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in runs[0]:
        curve = mean_losses(runs, name)
        if curve:
            ax.plot(*zip(*curve, strict=True), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def neftune_noise_rms(alpha: float, seq_len: float, dim: int) -> float:
    """RMS of NEFTune's noise per embedding element: Uniform(-a, a), a = alpha/sqrt(Ld), has RMS a/sqrt(3)."""
    return alpha / math.sqrt(seq_len * dim) / math.sqrt(3)


def mean_padded_length(
    tokenizer: PreTrainedTokenizerBase, rows: datasets.Dataset, batch_size: int = BATCH_SIZE
) -> float:
    """Mean over consecutive batches of the longest chat-formatted row in tokens (the padded length L)."""
    lens = [
        len(
            tokenizer(
                tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False),
                add_special_tokens=False,
            )["input_ids"]
        )
        for r in rows
    ]
    return statistics.fmean(max(lens[i : i + batch_size]) for i in range(0, len(lens), batch_size))
