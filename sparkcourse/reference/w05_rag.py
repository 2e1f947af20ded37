"""Reference solutions for week 05 (retrieval-augmented generation). Instructor-only; tests/test_rag.py checks
them against faiss, bm25s (Lucene BM25) and scikit-learn."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

PROMPT_HEADER = ("Answer the question using only the sources below. "
                 "Cite the sources you use by their id in square brackets.\n\n")


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Fixed-size character chunks; chunk i starts at i*(size-overlap); the last one reaches the end of the text."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    if not text:
        return []
    step = size - overlap
    n = 1 + max(0, math.ceil((len(text) - size) / step))
    return [text[i * step : i * step + size] for i in range(n)]


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (faiss's dtype)."""
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_index(vectors: np.ndarray, kind: str = "flat", nlist: int = 16, m: int = 16):
    """A faiss inner-product index over the normalised vectors: ``flat``, ``ivf`` (nlist lists) or ``hnsw`` (M)."""
    import faiss

    x = normalize(vectors)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(x)
    return index


def search(index, queries: np.ndarray, k: int, nprobe: int | None = None, ef_search: int | None = None):
    """(scores, ids) of the top ``k`` for each normalised query; ``nprobe``/``ef_search`` set where given."""
    import faiss

    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    return index.search(normalize(queries), k)


def exact_top_k(doc_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k by brute force in float64 (ties: lower id first)."""
    d = np.asarray(doc_vecs, float)
    q = np.asarray(query_vecs, float)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


def bm25_scores(query: Sequence[str], docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Lucene BM25 of every doc: sum over query tokens (repeats count) of idf * tf / (tf + k1 (1 - b + b |d|/avgdl)),
    idf = ln(1 + (N - df + 0.5) / (df + 0.5))."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    df = Counter(t for d in docs for t in set(d))
    out = np.zeros(n)
    for j, d in enumerate(docs):
        tf = Counter(d)
        norm = k1 * (1 - b + b * len(d) / avgdl)
        for t in query:
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + norm)
    return out


def rrf(rankings: Sequence[Sequence], k: int = 60) -> list[tuple]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank), rank from 1; (id, score) best first,
    ties broken by id."""
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def mmr(query_vec: np.ndarray, doc_vecs: np.ndarray, k: int, lam: float = 0.5) -> list[int]:
    """Maximal marginal relevance on cosine similarity: argmax lam*sim(q, d) - (1-lam)*max_s sim(d, s)."""
    q = np.asarray(query_vec, float)
    d = np.asarray(doc_vecs, float)
    q = q / np.linalg.norm(q)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    rel, sim = d @ q, d @ d.T
    chosen: list[int] = []
    for _ in range(min(k, len(d))):
        best, best_score = -1, -np.inf
        for i in range(len(d)):
            if i in chosen:
                continue
            red = max(sim[i, j] for j in chosen) if chosen else 0.0
            score = lam * rel[i] - (1 - lam) * red
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return chosen


def recall_at_k(ranked: Sequence, relevant, k: int) -> float:
    """Fraction of the relevant ids found in the first k."""
    rel = set(relevant)
    return len(rel & set(list(ranked)[:k])) / len(rel)


def mrr(ranked_lists: Sequence[Sequence], relevant_sets: Sequence) -> float:
    """Mean over queries of 1 / (rank of the first relevant id), rank from 1; 0 when none is retrieved."""
    total = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets, strict=True):
        rel = set(rel)
        total += next((1.0 / r for r, doc in enumerate(ranked, start=1) if doc in rel), 0.0)
    return total / len(ranked_lists)


def ndcg_at_k(ranked: Sequence, gains: dict, k: int) -> float:
    """nDCG@k with linear gains: sum gain_i / log2(i + 1) over ranks i = 1..k, over the same for the ideal order."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(i + 1) for i, doc in enumerate(list(ranked)[:k], start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def build_prompt(question: str, passages: Sequence[tuple[str, str]], budget: int,
                 count_tokens: Callable[[str], int]) -> tuple[str, list[str]]:
    """Header, then ``[id] text`` lines in rank order, then the question; a passage that would push the whole
    prompt over ``budget`` tokens is skipped. Returns the prompt and the ids it includes."""
    def render(chosen):
        sources = "".join(f"[{pid}] {text}\n" for pid, text in chosen)
        return f"{PROMPT_HEADER}{sources}\nQuestion: {question}\nAnswer:"

    chosen: list[tuple[str, str]] = []
    for pid, text in passages:
        if count_tokens(render([*chosen, (pid, text)])) <= budget:
            chosen.append((pid, text))
    return render(chosen), [pid for pid, _ in chosen]


_CITATION = re.compile(r"\[([^\[\]]+)\]")


def check_citations(answer: str, retrieved: Sequence[str]) -> dict:
    """Cited ids (order of first appearance), those not retrieved, and faithful = cites something, all retrieved."""
    cited: list[str] = []
    for m in _CITATION.finditer(answer):
        cid = m.group(1).strip()
        if cid not in cited:
            cited.append(cid)
    unsupported = [c for c in cited if c not in set(retrieved)]
    return {"cited": cited, "unsupported": unsupported, "faithful": bool(cited) and not unsupported}
