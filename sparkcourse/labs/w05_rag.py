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
              threads: int = 2, repeats: int = 7) -> list[dict]:
    """Recall@k against exact search and time per query of flat, IVF and HNSW indexes over unit vectors.

    The indexes come from ``build_index(vectors, kind, nlist=..., m=...)`` and are searched with
    ``search(index, queries, k, nprobe=..., ef_search=...)``: week 05's Exercise 2 (the notebook passes the
    student's functions, the tests the reference's). Each row: ``{"index", "param", "recall", "ms_per_query",
    "speedup"}``; time is the best of ``repeats`` searches of the whole query batch with ``threads`` OpenMP
    threads, speedup is relative to the flat index.
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

    truth, flat_ms = timed(build_index(base, "flat"))

    def row(name, param, index, **params):
        ids, ms = timed(index, **params)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth, strict=True)]))
        return {"index": name, "param": param, "recall": recall, "ms_per_query": ms, "speedup": flat_ms / ms}

    rows = [{"index": "flat", "param": None, "recall": 1.0, "ms_per_query": flat_ms, "speedup": 1.0}]
    ivf = build_index(base, "ivf", nlist=nlist)
    rows += [row("ivf", p, ivf, nprobe=p) for p in nprobes]
    hnsw = build_index(base, "hnsw", m=m)
    rows += [row("hnsw", ef, hnsw, ef_search=ef) for ef in ef_searches]
    return rows


_STOP = frozenset("a an and are as at be by do does for from how i in is it of on or that the this to what "
                  "when where which why with".split())


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, a few English stop words removed: the tokens BM25 sees."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]
