# %% answer id=chunking
def chunk_text(text, size, overlap):
    """Windows by count: the last window is the first that reaches the end."""
    if not (size > 0 and 0 <= overlap < size):
        raise ValueError(f"bad chunking: size={size}, overlap={overlap}")
    if text == "":
        return []
    step = size - overlap
    n = 1 if len(text) <= size else 1 + math.ceil((len(text) - size) / step)
    return [text[i * step:i * step + size] for i in range(n)]

# %% answer id=dense
import faiss


def normalize(x):
    x = np.array(x, dtype=np.float64)
    x /= np.sqrt((x * x).sum(axis=1))[:, None]
    return x.astype(np.float32)


def build_index(vectors, kind="flat", nlist=16, m=16):
    unit = normalize(vectors)
    dim = unit.shape[1]
    makers = {
        "flat": lambda: faiss.IndexFlatIP(dim),
        "ivf": lambda: faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT),
        "hnsw": lambda: faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT),
    }
    if kind not in makers:
        raise ValueError(f"unknown kind {kind}")
    index = makers[kind]()
    if not index.is_trained:
        index.train(unit)
    index.add(unit)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    if nprobe:
        faiss.extract_index_ivf(index).nprobe = nprobe
    if ef_search:
        faiss.downcast_index(index).hnsw.efSearch = ef_search
    return index.search(normalize(queries), k)

# %% answer id=bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    N = len(docs_tokens)
    lengths = np.array([len(d) for d in docs_tokens], dtype=float)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    doc_freq = Counter(tok for d in docs_tokens for tok in set(d))
    counts = [Counter(d) for d in docs_tokens]
    total = np.zeros(N)
    for term, times in Counter(query_tokens).items():
        if term not in doc_freq:
            continue
        idf = np.log1p((N - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))
        tf = np.array([c[term] for c in counts], dtype=float)
        total += times * idf * tf / (tf + norm)
    return total

# %% answer id=rrf
def rrf(rankings, k=60):
    fused = {}
    for ranking in rankings:
        for position, doc in enumerate(ranking):
            fused[doc] = fused.get(doc, 0) + 1 / (k + position + 1)
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)

# %% answer id=mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    D = unit(np.asarray(doc_vecs, dtype=float))
    relevance = D @ unit(np.asarray(query_vec, dtype=float))
    left = list(range(len(D)))
    picked = []
    while left and len(picked) < k:
        def value(i):
            red = max((float(D[i] @ D[j]) for j in picked), default=0.0)
            return lam * relevance[i] - (1 - lam) * red
        best = max(left, key=value)  # first maximum on ties, like argmax
        picked.append(best)
        left.remove(best)
    return picked

# %% answer id=metrics
def recall_at_k(ranked, relevant, k):
    hits = sum(1 for doc in list(ranked)[:k] if doc in set(relevant))
    return hits / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    rr = []
    for ranked, rel in zip(ranked_lists, relevant_sets):
        first = next((i for i, doc in enumerate(ranked) if doc in rel), None)
        rr.append(0.0 if first is None else 1.0 / (first + 1))
    return sum(rr) / len(rr)


def ndcg_at_k(ranked, gains, k):
    def dcg(values):
        return sum(v / math.log2(i + 2) for i, v in enumerate(values))
    ideal = dcg(sorted(gains.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([gains.get(doc, 0) for doc in list(ranked)[:k]]) / ideal

# %% answer id=prompt
def build_prompt(question, passages, budget, count_tokens):
    tail = f"\nQuestion: {question}\nAnswer:"
    body, ids = "", []
    for pid, text in passages:
        line = f"[{pid}] {text}\n"
        if count_tokens(HEADER + body + line + tail) <= budget:
            body += line
            ids.append(pid)
    return HEADER + body + tail, ids


def check_citations(answer, retrieved):
    cited = []
    for raw in re.findall(r"\[(.*?)\]", answer):
        if raw.strip() not in cited:
            cited.append(raw.strip())
    unsupported = [c for c in cited if c not in set(retrieved)]
    return {"cited": cited, "unsupported": unsupported, "faithful": bool(cited) and not unsupported}
