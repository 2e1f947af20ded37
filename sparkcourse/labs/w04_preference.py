"""Week 04's training lab: TRL's preference trainers on the tiny course LM, and what a reference model costs.

Two measurements, shared by the notebook (section 7) and ``benchmarks/preference_tiny.py``:

- :func:`measure_step` counts the memory of one training step on a small random Llama (policy weights,
  gradients, AdamW state, reference weights, activations saved for backward) and its time, with a frozen
  reference model (DPO) or without one (SimPO/ORPO).
- :func:`run_method` trains the tiny course chat model with ``DPOTrainer``, ``CPOTrainer`` (SimPO),
  ``ORPOTrainer`` or ``KTOTrainer`` on verifiable preference pairs (right vs wrong sums) and measures ranking
  accuracy and exact match on held-out pairs.

Every function that scores sequences takes the sequence log-probability as ``logps`` (the signature of week 04's
Exercise 1, ``sequence_logps(logits, input_ids, completion_mask, average=False)``), and the memory measurement
takes the losses of Exercises 2 and 3 (``dpo_loss``, ``simpo_loss``): the notebook passes the student's functions,
the tests and the benchmark ``sparkcourse.reference.w04_preference``'s. The lab holds no answer of its own.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

LogpsFn = Callable[..., torch.Tensor]
LossFn = Callable[..., tuple]  # week 04's dpo_loss / simpo_loss: (loss, ...) from (B, T) per-token log-probs

METHODS = ("DPO", "SimPO", "ORPO", "KTO")
REFERENCE_METHODS = ("DPO", "KTO")  # trainers that keep a frozen reference copy of the model
MEMORY_KEYS = ("policy weights", "gradients", "AdamW state", "reference weights", "activations")

# Per-method TRL settings used by run_method: the learning rates chosen on the validation pairs (held-out wording,
# seed 0, 150 steps) by benchmarks/preference_tiny.py, whose report lists every setting tried and its
# validation score; the test pairs were scored once, with these.
DEFAULT_LR = {"DPO": 2e-4, "SimPO": 2e-4, "ORPO": 2e-3, "KTO": 2e-4}
DEFAULT_BETA = {"DPO": 0.1, "SimPO": 2.0, "ORPO": 0.1, "KTO": 0.1}


# --------------------------------------------------------------------------------------------------------
# IPO (not an exercise: the notebook shows it next to your DPO)
# --------------------------------------------------------------------------------------------------------


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023, Eq. 17) as TRL 1.16's ``DPOTrainer`` computes it for ``loss_type="ipo"``.

    Mean over pairs of (Δ − 1/(2β))², with Δ the difference of the chosen and rejected log-ratios
    log π − log π_ref, each **averaged over its completion tokens** (TRL's choice, confirmed with the IPO authors;
    the paper writes sequence log-probs). ``(B, T)`` per-token log-probs and masks as in week 04's ``dpo_loss``;
    the reference log-probs get no gradient. A squared loss with a finite target: DPO's −log σ keeps pushing
    the margin up, IPO stops at Δ = 1/(2β).
    """

    def avg(tok: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (tok * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)

    delta = (avg(chosen, chosen_mask) - avg(ref_chosen.detach(), chosen_mask)) - (
        avg(rejected, rejected_mask) - avg(ref_rejected.detach(), rejected_mask))
    return ((delta - 1 / (2 * beta)) ** 2).mean()


# --------------------------------------------------------------------------------------------------------
# Memory and time of one step, with and without a reference model
# --------------------------------------------------------------------------------------------------------


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and repeats of one storage count once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def small_llama(hidden: int = 192, layers: int = 3, length: int = 48, vocab: int = 512, seed: int = 0):
    """The measured model: a random ``LlamaForCausalLM`` (8 heads / 4 KV heads, untied embeddings), eval mode."""
    from sparkcourse.models import random_llama

    return random_llama(seed, vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                        max_position_embeddings=length, tie_word_embeddings=False)


def measure_step(
    with_reference: bool,
    hidden: int = 192,
    layers: int = 3,
    batch: int = 4,
    length: int = 48,
    steps: int = 3,
    seed: int = 0,
    *,
    logps: LogpsFn,
    dpo_loss: LossFn,
    simpo_loss: LossFn,
) -> dict[str, float]:
    """Bytes per component and median step time (s) of a DPO step (``with_reference``) or a SimPO step.

    Policy forward and backward on ``batch`` chosen + ``batch`` rejected rows of ``length`` tokens (second
    half = completion), AdamW step; with a reference, one more forward pass under ``no_grad``. Activations
    are the bytes autograd saves for backward (parameters excluded), measured with saved-tensor hooks.
    The first step (which allocates AdamW's state) is not timed; ``steps`` more are. ``logps`` scores the
    sequences and ``dpo_loss`` (β 0.1) or ``simpo_loss`` (β 2, γ 0.5) is the loss, each given the sequence
    log-probs as one-token rows (week 04's Exercises 1-3).
    """
    vocab = 512
    policy = small_llama(hidden, layers, length, vocab, seed).train()
    reference = (
        small_llama(hidden, layers, length, vocab, seed).eval().requires_grad_(False)
        if with_reference
        else None
    )
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    ids, mask = _preference_batch(batch, length, vocab, seed)
    times: list[float] = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        act = _train_step(policy, reference, opt, ids, mask, logps, dpo_loss, simpo_loss)
        if step:
            times.append(time.perf_counter() - t0)
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    return {
        "policy weights": tensor_bytes(policy.parameters()),
        "gradients": tensor_bytes(p.grad for p in policy.parameters() if p.grad is not None),
        "AdamW state": tensor_bytes(state),
        "reference weights": tensor_bytes(reference.parameters()) if reference is not None else 0,
        "activations": act,
        "step s": statistics.median(times) if times else float("nan"),
    }


def _preference_batch(batch: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids of ``batch`` chosen rows, then ``batch`` rejected rows; the mask marks the second halves."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2 * batch, length), generator=g)
    mask = torch.zeros(2 * batch, length)
    mask[:, length // 2 :] = 1
    return ids, mask


def _train_step(policy: Any, reference: Any, opt: Any, ids: torch.Tensor, mask: torch.Tensor, logps: LogpsFn,
                dpo_loss: LossFn, simpo_loss: LossFn) -> int:
    """One AdamW step of DPO (with a reference) or SimPO; returns the bytes autograd saved for the backward."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in policy.parameters()}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in param_ptrs:
            saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        seq = logps(policy(ids).logits, ids, mask, average=reference is None)
    chosen, rejected = seq[:, None].chunk(2)  # one "token" per row: its sequence log-prob
    ones = torch.ones_like(chosen)
    if reference is not None:
        with torch.no_grad():
            ref_chosen, ref_rejected = logps(reference(ids).logits, ids, mask)[:, None].chunk(2)
        loss = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, ones, ones, beta=0.1)[0]
    else:
        loss = simpo_loss(chosen, rejected, ones, ones, beta=2.0, gamma=0.5)[0]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    return tensor_bytes(saved)


def compare_memory(**kw: Any) -> dict[str, dict[str, float]]:
    """:func:`measure_step` with a reference (DPO) and without (SimPO/ORPO); ``kw`` (``logps``, ``dpo_loss``,
    ``simpo_loss`` among them) go to both."""
    return {
        "DPO (reference)": measure_step(True, **kw),
        "SimPO/ORPO (no reference)": measure_step(False, **kw),
    }


def memory_summary(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Total bytes of each row and the reference-free/DPO ratios of memory and step time."""
    dpo, free = results["DPO (reference)"], results["SimPO/ORPO (no reference)"]
    total_dpo, total_free = (sum(r[k] for k in MEMORY_KEYS) for r in (dpo, free))
    no_act = [sum(r[k] for k in MEMORY_KEYS if k != "activations") for r in (dpo, free)]
    return {
        "DPO total": total_dpo,
        "free total": total_free,
        "memory ratio": total_free / total_dpo,
        "memory ratio without activations": no_act[1] / no_act[0],
        "step ratio": free["step s"] / dpo["step s"],
    }


def format_memory(results: dict[str, dict[str, float]]) -> str:
    """The memory comparison as a fixed-width text table (MB) with the ratios underneath."""
    lines = [f"{'':27s}" + "".join(f"{k:>18s}" for k in MEMORY_KEYS) + f"{'total MB':>10s}{'step ms':>9s}"]
    for name, r in results.items():
        total = sum(r[k] for k in MEMORY_KEYS)
        lines.append(
            f"{name:27s}"
            + "".join(f"{r[k] / 1e6:16.2f}MB" for k in MEMORY_KEYS)
            + f"{total / 1e6:10.2f}{r['step s'] * 1e3:9.1f}"
        )
    s = memory_summary(results)
    lines.append(
        f"reference-free / DPO memory: {s['memory ratio']:.2f} (without activations "
        f"{s['memory ratio without activations']:.2f});  step time ratio {s['step ratio']:.2f}"
    )
    return "\n".join(lines)


def plot_memory(ax: Any, results: dict[str, dict[str, float]]) -> None:
    """Stacked horizontal bars (MB per component) of :func:`compare_memory`'s result on a matplotlib axis."""
    names = list(results)
    left = [0.0] * len(names)
    for k in MEMORY_KEYS:
        vals = [results[n][k] / 1e6 for n in names]
        ax.barh(names, vals, left=left, label=k)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("MB")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3)


# --------------------------------------------------------------------------------------------------------
# The same question with TRL's trainers on a real-sized model (the notebook's spark cell)
# --------------------------------------------------------------------------------------------------------

# (fine-tuning, loss): full fine-tuning keeps fp32 weights, gradients and AdamW state (bf16 autocast) and, for DPO,
# a separate bf16 reference copy; LoRA trains adapters on a frozen bf16 base and TRL's DPO uses the base with the
# adapter disabled as the reference, so it needs no second copy.
GPU_CASES = (("full", "DPO"), ("full", "SimPO"), ("LoRA", "DPO"), ("LoRA", "SimPO"))
GPU_KEYS = ("resident GB", "peak GB", "unified used GB", "step s")


def _step_timer(device: str) -> Any:
    """A TrainerCallback timing each optimizer step (CUDA events on a GPU) and sampling MemAvailable."""
    from transformers import TrainerCallback

    from sparkcourse import gpu

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.spans: list[list[Any]] = []
            self.available: list[int] = []

        def _mark(self) -> Any:
            if device.startswith("cuda"):
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                return event
            return time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.spans.append([self._mark(), None])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.spans[-1][1] = self._mark()
            available = gpu.meminfo_bytes("MemAvailable")
            if available is not None:
                self.available.append(available)

        def seconds(self, skip: int) -> list[float]:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                return [a.elapsed_time(b) / 1e3 for a, b in self.spans[skip:] if b is not None]
            return [b - a for a, b in self.spans[skip:] if b is not None]

    return StepTimer()


def measure_trl_memory(
    build: Callable[[Any], tuple[Any, Any, str]],
    train: Any,
    cases: Sequence[tuple[str, str]] = GPU_CASES,
    steps: int = 12,
    batch: int = 4,
    max_length: int = 512,
    warmup: int = 2,
    device: str = "cuda",
) -> dict[str, dict[str, Any]]:
    """Peak memory and step time of real TRL training steps, with and without a reference model.

    ``build(dtype)`` returns ``(model, tokenizer, label)`` on ``device`` (the same architecture and weights on every
    call); ``train``: conversational preference pairs. Each case of ``cases`` ((``"full"`` or ``"LoRA"``, ``"DPO"``
    or ``"SimPO"``)) trains ``steps`` steps of ``batch`` pairs: DPO with ``DPOTrainer`` (full: an explicit bf16
    reference copy; LoRA: TRL's adapter-disabled base), SimPO with ``CPOTrainer(loss_type="simpo",
    cpo_alpha=0)``. Per case: ``resident GB`` (allocated before training: the weights), ``peak GB``
    (``torch.cuda.max_memory_allocated`` over training), ``unified used GB`` (the drop of /proc/meminfo
    MemAvailable from before the models were built to its lowest value during training: the pool a unified-memory
    Spark shares, where ``cudaMemGetInfo`` under-reports; on a discrete GPU this is host memory), ``step s`` (median
    of the steps after ``warmup``, CUDA events), ``params`` and ``label``. On a CPU the GB fields are None.
    """
    import gc

    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from sparkcourse import gpu

    cuda = device.startswith("cuda")
    rows: dict[str, dict[str, Any]] = {}
    for tuning, loss in cases:
        if tuning not in ("full", "LoRA") or loss not in ("DPO", "SimPO"):
            raise ValueError(f"unknown case {(tuning, loss)!r}")
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        available0 = gpu.meminfo_bytes("MemAvailable")
        full = tuning == "full"
        model, tokenizer, label = build(torch.float32 if full else torch.bfloat16)
        ref_model = build(torch.bfloat16)[0].requires_grad_(False) if full and loss == "DPO" else None
        common = dict(
            output_dir=os.path.join(tempfile.gettempdir(), "sparkcourse_pref_gpu"),
            per_device_train_batch_size=batch,
            max_steps=steps,
            max_length=max_length,
            learning_rate=1e-6 if full else 1e-5,
            bf16=cuda,
            use_cpu=not cuda,
            report_to=[],
            disable_tqdm=True,
            logging_strategy="no",
            save_strategy="no",
            activation_checkpointing=True,
            seed=0,
        )
        peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear") if not full else None
        if loss == "DPO":
            args = DPOConfig(beta=0.1, **common)
            trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train,
                                 processing_class=tokenizer, peft_config=peft)
        else:
            args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5,
                             remove_unused_columns=False, **common)
            trainer = CPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                 peft_config=peft)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        timer = _step_timer(device)
        trainer.add_callback(timer)
        params = sum(p.numel() for p in trainer.model.parameters())
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        if cuda:
            torch.cuda.synchronize()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        step_s = statistics.median(timer.seconds(min(warmup, steps - 1)))
        peak = torch.cuda.max_memory_allocated() if cuda else None
        used = (available0 - min(timer.available)) if available0 is not None and timer.available else None
        how = {"full": " (bf16 reference copy)", "LoRA": " (reference: base, adapter off)"}[tuning]
        rows[f"{tuning}, {loss}" + (how if loss == "DPO" else " (no reference)")] = {
            "tuning": tuning,
            "loss": loss,
            "label": label,
            "params": params,
            "trainable": trainable,
            "resident GB": resident / 1e9 if cuda else None,
            "peak GB": peak / 1e9 if peak is not None else None,
            "unified used GB": used / 1e9 if used is not None and cuda else None,
            "step s": step_s,
        }
        del model, ref_model, trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def format_trl_memory(rows: dict[str, dict[str, Any]]) -> str:
    """:func:`measure_trl_memory`'s rows as a text table, with each tuning's reference-free/DPO peak ratio."""

    def gb(x: float | None) -> str:
        return f"{x:8.2f}" if x is not None else f"{'n/a':>8s}"

    lines = [f"{'case':42s} {'trainable':>11s} {'resident GB':>11s} {'peak GB':>8s} {'pool GB':>8s} {'step ms':>8s}"]
    for name, r in rows.items():
        lines.append(f"{name:42s} {r['trainable'] / 1e6:10.1f}M {gb(r['resident GB']):>11s} {gb(r['peak GB'])} "
                     f"{gb(r['unified used GB'])} {r['step s'] * 1e3:8.1f}")
    for tuning in ("full", "LoRA"):
        pair = {r["loss"]: r for r in rows.values() if r["tuning"] == tuning}
        if {"DPO", "SimPO"} <= set(pair) and pair["DPO"]["peak GB"]:
            lines.append(f"{tuning}: reference-free/DPO peak memory {pair['SimPO']['peak GB'] / pair['DPO']['peak GB']:.2f}, "
                         f"step time {pair['SimPO']['step s'] / pair['DPO']['step s']:.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Training the tiny course model with TRL's trainers
# --------------------------------------------------------------------------------------------------------


WORDINGS = ("held-out", "pre-training")
SPLITS = ("train", "validation", "test")
VALIDATION_ROWS = 100  # the last 100 of the 400 shipped training pairs: settings are tuned on these, never on test


def load_pairs(split: str, wording: str = "held-out", chat: bool = False, n: int | None = None) -> Any:
    """The course's sum preference pairs; ``wording="held-out"`` asks them as "Add 78 and 93." instead.

    ``split``: "train" (the first 300 shipped training pairs), "validation" (the last 100: choose learning rates
    and β on these) or "test" (the 100 shipped test pairs: report once, with the settings chosen on validation).

    The tiny LM was pre-trained on "What is 78 + 93?" and already answers held-out operand pairs in that
    wording perfectly, so those pairs are saturated. "Add a and b." is the instruction wording pre-training
    never saw (the ``add_words`` task of the instruction data), where the base model is right 4-5% of the
    time: there preference training has something to teach. ``n``: the first ``n`` rows only.
    """
    from sparkcourse.datasets_course import load_preferences

    if wording not in WORDINGS:
        raise ValueError(f"unknown wording {wording!r}; expected one of {WORDINGS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    ds = load_preferences("test" if split == "test" else "train")
    if split != "test":
        cut = len(ds) - VALIDATION_ROWS
        ds = ds.select(range(cut) if split == "train" else range(cut, len(ds)))
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    if wording == "held-out":
        ds = ds.map(
            lambda r: {"prompt": re.sub(r"^What is (\d+) \+ (\d+)\?$", r"Add \1 and \2.", r["prompt"])}
        )
    if chat:  # conversational rows: TRL applies the chat template
        ds = ds.map(
            lambda r: {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    return ds


def tokenize_pair(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Ids and completion mask of the chat prompt followed by the answer and the end-of-turn token."""
    from sparkcourse.models import chat_prompt

    p_ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, [0] * len(p_ids) + [1] * len(a_ids)


def trl_args(config_cls: type, **kw: Any) -> Any:
    """A TRL config with quiet CPU settings for every trainer (TRL defaults to bf16); kw override them."""
    base: dict[str, Any] = dict(
        output_dir=os.path.join(tempfile.gettempdir(), "sparkcourse_pref"),
        per_device_train_batch_size=8,
        max_steps=40,
        learning_rate=5e-4,
        bf16=False,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        save_strategy="no",
        activation_checkpointing=False,
        seed=0,
    )
    base.update(kw)
    return config_cls(**base)


def to_kto(ds: Any, seed: int = 0) -> Any:
    """Paired rows -> shuffled unpaired ``(prompt, completion, label)`` rows for KTO (chosen: True)."""
    import datasets

    rows = [
        {"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
        for r in ds
        for k in ("chosen", "rejected")
    ]
    return datasets.Dataset.from_list(rows).shuffle(seed=seed)


@torch.no_grad()
def preference_accuracy(model: Any, tokenizer: Any, ds: Any, *, logps: LogpsFn) -> float:
    """**Ranking accuracy**: fraction of pairs whose chosen answer has the higher length-averaged log-prob
    (``logps``) under ``model``. Not TRL's ``rewards/accuracies``, which compares DPO's implicit rewards
    β(log π − log π_ref) (summed log-probs, relative to the reference) on the training batches."""
    was_training = model.training
    model.eval()
    wins = 0
    for row in ds:
        scores = []
        for kind in ("chosen", "rejected"):
            ids, m = tokenize_pair(tokenizer, row["prompt"], row[kind])
            ids_t = torch.tensor([ids], device=model.device)
            logits = model(ids_t).logits.double()
            scores.append(logps(logits, ids_t, torch.tensor([m], device=model.device), average=True).item())
        wins += scores[0] > scores[1]
    model.train(was_training)
    return wins / len(ds)


def chosen_exact_match(model: Any, tokenizer: Any, ds: Any, max_new_tokens: int = 8) -> float:
    """Fraction of prompts whose greedy answer is exactly the chosen (correct) answer."""
    from sparkcourse.models import generate_batch

    answers = generate_batch(model, tokenizer, list(ds["prompt"]), max_new_tokens=max_new_tokens)
    return sum(a == c.strip() for a, c in zip(answers, ds["chosen"], strict=True)) / len(ds)


def evaluate(model: Any, tokenizer: Any, test: Any, *, logps: LogpsFn) -> dict[str, float]:
    """Ranking accuracy (scored with ``logps``) and exact match of ``model`` on plain-string preference rows."""
    return {
        "ranking acc": preference_accuracy(model, tokenizer, test, logps=logps),
        "exact match": chosen_exact_match(model, tokenizer, test),
    }


def make_trainer(
    name: str,
    model: Any,
    tokenizer: Any,
    train: Any,
    steps: int = 40,
    seed: int = 0,
    learning_rate: float | None = None,
    beta: float | None = None,
    **kw: Any,
) -> Any:
    """The TRL trainer for ``name`` in METHODS on conversational pairs ``train`` (KTO gets them unpaired)."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")
    beta = DEFAULT_BETA[name] if beta is None else beta
    learning_rate = DEFAULT_LR[name] if learning_rate is None else learning_rate
    common = dict(max_steps=steps, seed=seed, learning_rate=learning_rate, beta=beta, **kw)
    if name == "DPO":
        args, cls, data = trl_args(DPOConfig, **common), DPOTrainer, train
    elif name == "SimPO":
        args = trl_args(
            CPOConfig,
            loss_type="simpo",
            cpo_alpha=0.0,
            simpo_gamma=1.0,
            remove_unused_columns=False,
            **common,
        )
        cls, data = CPOTrainer, train
    elif name == "ORPO":
        args, cls, data = trl_args(ORPOConfig, remove_unused_columns=False, **common), ORPOTrainer, train
    elif name == "KTO":
        args, cls, data = trl_args(KTOConfig, **common), KTOTrainer, to_kto(train, seed)
    else:
        raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")
    trainer = cls(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    if args.logging_strategy == "no":  # the printer would still print the final metrics dict
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def run_method(
    name: str,
    train: Any,
    test: Any,
    steps: int = 40,
    seed: int = 0,
    learning_rate: float | None = None,
    beta: float | None = None,
    *,
    logps: LogpsFn,
    **kw: Any,
) -> dict[str, float]:
    """Train a fresh tiny course LM with ``name``'s TRL trainer; ranking accuracy, exact match, train seconds.

    ``train``: conversational pairs (``load_preferences("train", chat=True)``); ``test``: plain-string pairs
    (:func:`load_pairs`). ``learning_rate``/``beta``: None for the method's default; ``kw`` go to the TRL
    config.
    """
    from sparkcourse.models import load_tiny_lm

    torch.manual_seed(seed)
    model, tokenizer = load_tiny_lm()
    model.train()
    trainer = make_trainer(name, model, tokenizer, train, steps, seed, learning_rate, beta, **kw)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    result = evaluate(trainer.model, tokenizer, test, logps=logps)
    result["train s"] = seconds
    return result


def base_row(test: Any, *, logps: LogpsFn) -> dict[str, float]:
    """The untrained tiny course LM's metrics (the table's first row), scored with ``logps``."""
    from sparkcourse.models import load_tiny_lm

    model, tokenizer = load_tiny_lm()
    result = evaluate(model, tokenizer, test, logps=logps)
    result["train s"] = 0.0
    return result


def compare_methods(
    train: Any,
    test: Any,
    methods: Sequence[str] = METHODS,
    steps: int = 40,
    seed: int = 0,
    *,
    logps: LogpsFn,
    **kw: Any,
) -> dict[str, dict[str, float]]:
    """The table: the base model, then each method trained for ``steps`` steps with ``seed``, scored with ``logps``."""
    table = {"base (no training)": base_row(test, logps=logps)}
    for method in methods:
        table[method] = run_method(method, train, test, steps=steps, seed=seed, logps=logps, **kw)
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """:func:`compare_methods`'s result as a fixed-width text table."""
    lines = [f"{'method':20s} {'ranking acc':>11s} {'exact match':>12s} {'train s':>8s}"]
    for name, r in table.items():
        lines.append(f"{name:20s} {r['ranking acc']:11.2f} {r['exact match']:12.2f} {r['train s']:8.1f}")
    return "\n".join(lines)


def plot_table(ax: Any, table: dict[str, dict[str, float]]) -> None:
    """Reward accuracy and exact match bars per method on a matplotlib axis."""
    xs = range(len(table))
    ax.bar([x - 0.2 for x in xs], [r["ranking acc"] for r in table.values()], 0.4, label="ranking accuracy")
    ax.bar([x + 0.2 for x in xs], [r["exact match"] for r in table.values()], 0.4, label="exact match")
    ax.set_xticks(list(xs), list(table), fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
