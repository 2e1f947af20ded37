"""Course chat datasets (instructions, preferences): JSONL made by tools/make_tiny_lm.py, loaded offline."""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparkcourse.models import generate_batch

INSTRUCT_DIR = Path(__file__).resolve().parent / "data" / "instruct"
SPLITS = ("train", "test")
# Instruction rows are {task, prompt, response}; preference rows {task, prompt, chosen, rejected}.
# The tiny LM was pre-trained on PRETRAIN_TASKS only; HELD_OUT_TASKS (known skills asked in new words) are
# what fine-tuning teaches. train.jsonl: held-out tasks plus replay of add/reverse/upper; test.jsonl: all.
PRETRAIN_TASKS = ("add", "reverse", "upper", "fact", "fact_json")
HELD_OUT_TASKS = ("spell_backwards", "add_words", "shout")


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
    """Instruction rows ``task, prompt, response``; ``chat=True``: TRL's conversational prompt/completion."""
    ds = _load_jsonl("", split)
    if not chat:
        return ds
    return ds.map(
        lambda row: {"prompt": _user(row["prompt"]), "completion": _assistant(row["response"])},
        remove_columns=["response"],
    )


def load_preferences(split: str = "train", chat: bool = False) -> datasets.Dataset:
    """Preference rows ``task, prompt, chosen, rejected`` (chosen: the correct sum); ``chat=True`` for TRL."""
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
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    n: int | None = None,
) -> float:
    """Fraction of the first ``n`` rows whose greedy answer equals ``response`` (or ``completion``)."""
    rows = dataset if n is None else dataset.select(range(min(n, len(dataset))))
    if len(rows) == 0:
        raise ValueError("exact_match needs at least one row")
    refs = rows["response"] if "response" in rows.column_names else rows["completion"]
    answers = generate_batch(model, tokenizer, [_text(p) for p in rows["prompt"]])
    return sum(a == _text(r).strip() for a, r in zip(answers, refs, strict=True)) / len(rows)
