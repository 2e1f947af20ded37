"""Course datasets shipped as JSONL (chat instructions, arithmetic preferences), loaded offline with ``datasets``.

``tools/make_tiny_lm.py`` generated them together with the tiny LM. Instruction rows are
``{"task", "prompt", "response"}``; preference rows are ``{"task", "prompt", "chosen", "rejected"}``.
The tiny LM was pre-trained on ``PRETRAIN_TASKS`` only; ``HELD_OUT_TASKS`` are what fine-tuning teaches.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparkcourse.models import generate_batch

INSTRUCT_DIR = Path(__file__).resolve().parent / "data" / "instruct"
SPLITS = ("train", "test")
PRETRAIN_TASKS = ("add", "reverse", "upper", "fact")
HELD_OUT_TASKS = ("add_json", "reverse_upper")


def _load_jsonl(prefix: str, split: str) -> datasets.Dataset:
    """The shipped file ``{prefix}{split}.jsonl`` as a ``datasets.Dataset`` (local files only)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    path = INSTRUCT_DIR / f"{prefix}{split}.jsonl"
    return datasets.load_dataset("json", data_files=str(path), split="train")


def _user(text: str) -> list[dict[str, str]]:
    """A one-message user turn."""
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    """A one-message assistant turn."""
    return [{"role": "assistant", "content": text}]


def load_instruct(split: str = "train", chat: bool = False) -> datasets.Dataset:
    """Instruction rows ``task, prompt, response``; ``chat=True`` gives TRL's conversational ``prompt, completion``."""
    ds = _load_jsonl("", split)
    if not chat:
        return ds
    return ds.map(
        lambda row: {"prompt": _user(row["prompt"]), "completion": _assistant(row["response"])},
        remove_columns=["response"],
    )


def load_preferences(split: str = "train", chat: bool = False) -> datasets.Dataset:
    """Preference rows ``task, prompt, chosen, rejected`` (chosen is the correct sum); ``chat=True`` for TRL."""
    ds = _load_jsonl("preferences_", split)
    if not chat:
        return ds
    return ds.map(
        lambda row: {
            "prompt": _user(row["prompt"]),
            "chosen": _assistant(row["chosen"]),
            "rejected": _assistant(row["rejected"]),
        }
    )


def _text(value: str | list[dict[str, str]]) -> str:
    """The text of a plain string or of the last message of a conversational column."""
    return value if isinstance(value, str) else value[-1]["content"]


def exact_match(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: datasets.Dataset, n: int | None = None
) -> float:
    """Fraction of the first ``n`` rows whose greedy answer equals the reference (``response`` or ``completion``)."""
    rows = dataset if n is None else dataset.select(range(min(n, len(dataset))))
    if len(rows) == 0:
        raise ValueError("exact_match needs at least one row")
    refs = rows["response"] if "response" in rows.column_names else rows["completion"]
    answers = generate_batch(model, tokenizer, [_text(p) for p in rows["prompt"]])
    return sum(a == _text(r).strip() for a, r in zip(answers, refs, strict=True)) / len(rows)
