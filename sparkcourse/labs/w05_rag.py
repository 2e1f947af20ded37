"""Week 05's retrieval corpus: passages of the course's own docs, a question set, cached MiniLM embeddings.

The corpus is a fixed snapshot (``data/rag/corpus.jsonl``) made by ``tools/make_rag_corpus.py`` from the
markdown cells of ``authoring/*.py``, ``README.md`` and the module docstrings of ``sparkcourse``;
``extract_passages`` is the deterministic splitter both use. ``data/rag/questions.jsonl`` holds questions with
their answer passages; ``data/rag/embeddings.npz`` caches all-MiniLM-L6-v2 vectors of the passages, the
questions and the benchmark's word windows, keyed by a hash of the texts (``sparkcourse.embeddings``), so grading
never loads the model. ``ann_sweep`` measures recall against speed of the indexes the caller builds (week 05's
Exercise 2 is to build them, so the lab does not).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparkcourse import embeddings

DATA = Path(__file__).resolve().parents[1] / "data" / "rag"
CORPUS_FILE, QUESTIONS_FILE, CACHE_FILE = DATA / "corpus.jsonl", DATA / "questions.jsonl", DATA / "embeddings.npz"
MAX_WORDS = 80  # a passage grows paragraph by paragraph up to this many words
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


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


def cached_embeddings(name: str, texts: list[str], cache: Path | None = None) -> np.ndarray:
    """MiniLM embeddings of ``texts`` under key ``name``: from the cache if its hash matches ``texts``, else computed.

    A miss embeds with MiniLM and writes the cache (the shipped one if writable, else ``~/.cache/sparkcourse``).
    """
    paths = [cache] if cache else [CACHE_FILE, Path.home() / ".cache" / "sparkcourse" / "rag_embeddings.npz"]
    return embeddings.cached_embeddings(name, texts, paths)


def ann_sweep(base: np.ndarray, queries: np.ndarray, build_index: Callable, search: Callable, k: int = 10,
              nlist: int = 64, m: int = 32, nprobes=(1, 2, 4, 8, 16), ef_searches=(8, 16, 32, 64, 128),
              threads: int = 2, repeats: int = 7, keep: dict | None = None) -> list[dict]:
    """Recall@k against exact search and time per query of flat, IVF and HNSW indexes over unit vectors.

    The indexes come from ``build_index(vectors, kind, nlist=..., m=...)`` and are searched with
    ``search(index, queries, k, nprobe=..., ef_search=...)``: week 05's Exercise 2 (the notebook passes the
    student's functions, the tests the reference's). Each row: ``{"index", "param", "recall", "ms_per_query",
    "speedup"}``; time is the best of ``repeats`` searches of the whole query batch with ``threads`` OpenMP
    threads, speedup is relative to the flat index. A ``keep`` dict receives the three indexes (by kind).
    """
    import faiss

    faiss.omp_set_num_threads(threads)

    def timed(index, **params):
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, ids = search(index, queries, k, **params)
            best = min(best, time.perf_counter() - t0)
        return np.asarray(ids), 1e3 * best / len(queries)

    keep = {} if keep is None else keep
    keep["flat"] = build_index(base, "flat")
    truth, flat_ms = timed(keep["flat"])

    def row(name, param, index, **params):
        ids, ms = timed(index, **params)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth, strict=True)]))
        return {"index": name, "param": param, "recall": recall, "ms_per_query": ms, "speedup": flat_ms / ms}

    rows = [{"index": "flat", "param": None, "recall": 1.0, "ms_per_query": flat_ms, "speedup": 1.0}]
    ivf = keep["ivf"] = build_index(base, "ivf", nlist=nlist)
    rows += [row("ivf", p, ivf, nprobe=p) for p in nprobes]
    hnsw = keep["hnsw"] = build_index(base, "hnsw", m=m)
    rows += [row("hnsw", ef, hnsw, ef_search=ef) for ef in ef_searches]
    return rows


_STOP = frozenset("a an and are as at be by do does for from how i in is it of on or that the this to what "
                  "when where which why with".split())


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, a few English stop words removed: the tokens BM25 sees."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


# --- evaluation helpers: paired bootstrap, index memory, product quantisation, answer support ------------------

def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Paired bootstrap of the mean difference ``mean(b) - mean(a)`` of two per-question scores on the same
    questions: resample the questions with replacement (the same resample for both systems), ``n_resamples``
    times with seed ``seed``. Returns ``{"diff", "low", "high", "p_le_0"}``: the observed difference, its
    percentile interval at ``level``, and the fraction of resamples where b did not beat a."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("a and b must be per-question scores of the same questions")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    diffs = (b[idx] - a[idx]).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return {"diff": float(b.mean() - a.mean()), "low": float(low), "high": float(high),
            "p_le_0": float(np.mean(diffs <= 0))}


def index_bytes(index) -> int:
    """Bytes of a faiss index as ``faiss.serialize_index`` writes it: the vectors (or codes) *and* the structure
    around them (HNSW's links, IVF's lists and centroids, PQ's codebooks) — about what it takes in memory."""
    import faiss

    return int(faiss.serialize_index(index).size)


def hnsw_link_bytes(n: int, m: int, ml: float | None = None) -> float:
    """Expected bytes of an HNSW graph's links in faiss: every node has 2·M slots at level 0 and M at each upper
    level it reaches; a node reaches level ≥ l with probability exp(-l / mL), mL = 1/ln M, so it has on average
    1/(M - 1) upper levels; a slot is a 4-byte id. (faiss also keeps per-node offsets and levels, a few bytes.)"""
    upper = 1 / (m - 1) if ml is None else sum(np.exp(-lv / ml) for lv in range(1, 64))
    return 4.0 * n * (2 * m + m * upper)


def pq_sweep(base: np.ndarray, queries: np.ndarray, k: int = 10, nlist: int = 64, nprobe: int = 16,
             m_values=(8, 16, 48, 96), nbits: int = 8, threads: int = 2, niter: int = 25) -> list[dict]:
    """Memory against recall@k (vs exact inner-product search) of IVF-PQ indexes over unit vectors.

    For each ``m`` in ``m_values`` the 384 dimensions are cut into ``m`` sub-vectors, each stored as one
    ``nbits``-bit code (a centroid of 2**nbits learnt by k-means on that sub-space): ``m * nbits / 8`` bytes a
    vector instead of ``4 d``. Rows: ``{"index", "m", "bytes_per_vector", "index_mb", "recall"}``, the first the
    IVF-Flat index of the same lists for comparison. Built with ``faiss.index_factory`` (``IVF<nlist>,PQ<m>``);
    faiss's k-means is seeded (its default seed), so the figures repeat on one machine; ``niter`` k-means
    iterations train each codebook (faiss's default is 25; fewer are cheaper and a little less accurate).
    """
    import faiss

    faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(base, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    d = x.shape[1]
    exact = faiss.IndexFlatIP(d)
    exact.add(x)
    _, truth = exact.search(q, k)

    def row(name, m, index):
        faiss.extract_index_ivf(index).nprobe = nprobe
        _, ids = index.search(q, k)
        recall = float(np.mean([len(set(a) & set(t)) / k for a, t in zip(ids, truth, strict=True)]))
        return {"index": name, "m": m, "bytes_per_vector": 4 * d if m is None else m * nbits / 8,
                "index_mb": index_bytes(index) / 1e6, "recall": recall}

    rows = []
    for m in (None, *m_values):
        spec = f"IVF{nlist},Flat" if m is None else f"IVF{nlist},PQ{m}x{nbits}"
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        if m is not None:
            index.pq.cp.niter = niter
        index.train(x)
        index.add(x)
        rows.append(row(spec, m, index))
    return rows


def generator_token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a text as the generating model reads it (its own tokenizer, special tokens excluded)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def support(answer: str, cited_texts: list[str], threshold: float = 0.5) -> dict:
    """A simple, lexical measure of how faithful an answer is to the passages it cites.

    The answer's citations ``[...]`` are removed and it is cut into sentences; a sentence's *support* is the
    fraction of its content words (``tokenize``: lower-case alphanumeric words, stop words removed) that occur in
    the cited passages. Returns ``{"word_support", "supported_sentences", "sentences"}``: the support of all
    content words together, and how many sentences reach ``threshold``. It counts word overlap, not meaning: a
    negated or garbled copy of a passage scores high, a faithful paraphrase lower; an NLI (entailment) model is
    the stronger judge. An answer without content words or without cited text scores 0.
    """
    source = set(tokenize(" ".join(cited_texts)))
    text = re.sub(r"\[[^\[\]]*\]", " ", answer)
    sentences = [s for s in _SENTENCE.split(text) if tokenize(s)]
    words = [w for s in sentences for w in tokenize(s)]
    supported = sum(np.mean([w in source for w in tokenize(s)]) >= threshold for s in sentences)
    return {"word_support": float(np.mean([w in source for w in words])) if words and source else 0.0,
            "supported_sentences": int(supported) if source else 0, "sentences": len(sentences)}
