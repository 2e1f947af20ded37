# Plausible mistakes for 05-rag (see tests/test_mutants.py for the format).

# %% mutant name=overlap_drops_text cell=chunking fails=test_chunking
def chunk_text(text, size, overlap):
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("bad sizes")
    step = size - overlap + 1
    chunks, start = [], 0
    while start < len(text):
        chunks.append(text[start:start + size])
        if start + size >= len(text):
            break
        start += step
    return chunks

# %% mutant name=overlap_repeats_tail cell=chunking fails=test_chunking
def chunk_text(text, size, overlap):
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("bad sizes")
    return [text[i:i + size] for i in range(0, len(text), size - overlap)]

# %% mutant name=tail_dropped cell=chunking fails=test_chunking
def chunk_text(text, size, overlap):
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("bad sizes")
    if len(text) <= size:
        return [text] if text else []
    return [text[i:i + size] for i in range(0, len(text) - size, size - overlap)]

# %% mutant name=overlap_ignored cell=chunking fails=test_chunking
def chunk_text(text, size, overlap):
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("bad sizes")
    return [text[i:i + size] for i in range(0, len(text), size)]

# %% mutant name=docs_not_normalised cell=dense fails=test_dense_flat
import faiss


def normalize(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(kind)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    return index.search(normalize(queries), k)

# %% mutant name=queries_not_normalised cell=dense fails=test_dense_flat
import faiss


def normalize(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
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
        raise ValueError(kind)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

# %% mutant name=first_hit_skipped cell=dense fails=test_dense_flat
import faiss


def normalize(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
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
        raise ValueError(kind)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    scores, ids = index.search(normalize(queries), k + 1)  # "skip the query itself"
    return scores[:, 1:], ids[:, 1:]

# %% mutant name=l2_metric_ann cell=dense fails=test_dense_ann
import faiss


def normalize(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
    x = normalize(vectors)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.train(x)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m)
    else:
        raise ValueError(kind)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    return index.search(normalize(queries), k)

# %% mutant name=search_params_ignored cell=dense fails=test_dense_ann
import faiss


def normalize(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
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
        raise ValueError(kind)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    return index.search(normalize(queries), k)

# %% mutant name=okapi_idf_without_one cell=bm25 fails=test_bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    n = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n
    df = Counter(t for d in docs_tokens for t in set(d))
    out = np.zeros(n)
    for j, d in enumerate(docs_tokens):
        tf = Counter(d)
        for t in query_tokens:
            if tf[t]:
                idf = math.log((n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return out

# %% mutant name=no_length_normalisation cell=bm25 fails=test_bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    n = len(docs_tokens)
    df = Counter(t for d in docs_tokens for t in set(d))
    out = np.zeros(n)
    for j, d in enumerate(docs_tokens):
        tf = Counter(d)
        for t in query_tokens:
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + k1)
    return out

# %% mutant name=query_terms_deduplicated cell=bm25 fails=test_bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    n = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n
    df = Counter(t for d in docs_tokens for t in set(d))
    out = np.zeros(n)
    for j, d in enumerate(docs_tokens):
        tf = Counter(d)
        for t in set(query_tokens):
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return out

# %% mutant name=rrf_without_k cell=rrf fails=test_rrf
def rrf(rankings, k=60):
    scores = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / rank
    return sorted(scores.items(), key=lambda kv: -kv[1])

# %% mutant name=rrf_rank_from_zero cell=rrf fails=test_rrf
def rrf(rankings, k=60):
    scores = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])

# %% mutant name=mmr_sum_redundancy cell=mmr fails=test_mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    q = np.asarray(query_vec, float)
    d = np.asarray(doc_vecs, float)
    q = q / np.linalg.norm(q)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    chosen = []
    for _ in range(min(k, len(d))):
        score = lam * (d @ q) - (1 - lam) * (d @ d[chosen].T).sum(axis=1)
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen

# %% mutant name=mmr_dot_not_cosine cell=mmr fails=test_mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    q = np.asarray(query_vec, float)
    d = np.asarray(doc_vecs, float)
    chosen = []
    for _ in range(min(k, len(d))):
        red = (d @ d[chosen].T).max(axis=1) if chosen else np.zeros(len(d))
        score = lam * (d @ q) - (1 - lam) * red
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen

# %% mutant name=ndcg_without_log_discount cell=metrics fails=test_metrics
def recall_at_k(ranked, relevant, k):
    return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    total = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets):
        for rank, doc in enumerate(ranked, start=1):
            if doc in rel:
                total += 1 / rank
                break
    return total / len(ranked_lists)


def ndcg_at_k(ranked, gains, k):
    dcg = sum(gains.get(doc, 0.0) / rank for rank, doc in enumerate(list(ranked)[:k], start=1))
    idcg = sum(g / rank for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
    return dcg / idcg if idcg else 0.0

# %% mutant name=mrr_rank_off_by_one cell=metrics fails=test_metrics
def recall_at_k(ranked, relevant, k):
    return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    total = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets):
        for rank, doc in enumerate(ranked):
            if doc in rel:
                total += 1 / (rank + 2)
                break
    return total / len(ranked_lists)


def ndcg_at_k(ranked, gains, k):
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(list(ranked)[:k], start=1))
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
    return dcg / idcg if idcg else 0.0

# %% mutant name=ndcg_ideal_from_retrieved_only cell=metrics fails=test_metrics
def recall_at_k(ranked, relevant, k):
    return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    total = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets):
        for rank, doc in enumerate(ranked, start=1):
            if doc in rel:
                total += 1 / rank
                break
    return total / len(ranked_lists)


def ndcg_at_k(ranked, gains, k):
    got = [gains.get(doc, 0.0) for doc in list(ranked)[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(got))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(got, reverse=True)))
    return dcg / idcg if idcg else 0.0

# %% mutant name=recall_divided_by_k cell=metrics fails=test_metrics
def recall_at_k(ranked, relevant, k):
    return len(set(relevant) & set(list(ranked)[:k])) / k


def mrr(ranked_lists, relevant_sets):
    total = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets):
        for rank, doc in enumerate(ranked, start=1):
            if doc in rel:
                total += 1 / rank
                break
    return total / len(ranked_lists)


def ndcg_at_k(ranked, gains, k):
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(list(ranked)[:k], start=1))
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
    return dcg / idcg if idcg else 0.0

# %% mutant name=budget_strict_or_passages_only cell=prompt fails=test_prompt
def build_prompt(question, passages, budget, count_tokens):
    included, used = [], 0
    for pid, text in passages:
        cost = count_tokens(f"[{pid}] {text}\n")
        if used + cost < budget:
            included.append((pid, text))
            used += cost
    prompt = HEADER + "".join(f"[{p}] {t}\n" for p, t in included) + f"\nQuestion: {question}\nAnswer:"
    return prompt, [p for p, _ in included]


def check_citations(answer, retrieved):
    cited = list(dict.fromkeys(c.strip() for c in re.findall(r"\[([^\[\]]+)\]", answer)))
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": bool(cited) and not bad}

# %% mutant name=budget_stops_at_first_misfit cell=prompt fails=test_prompt
def build_prompt(question, passages, budget, count_tokens):
    def render(items):
        return HEADER + "".join(f"[{p}] {t}\n" for p, t in items) + f"\nQuestion: {question}\nAnswer:"

    included = []
    for pid, text in passages:
        if count_tokens(render(included + [(pid, text)])) > budget:
            break
        included.append((pid, text))
    return render(included), [p for p, _ in included]


def check_citations(answer, retrieved):
    cited = list(dict.fromkeys(c.strip() for c in re.findall(r"\[([^\[\]]+)\]", answer)))
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": bool(cited) and not bad}

# %% mutant name=uncited_answer_called_faithful cell=prompt fails=test_citations
def build_prompt(question, passages, budget, count_tokens):
    def render(items):
        return HEADER + "".join(f"[{p}] {t}\n" for p, t in items) + f"\nQuestion: {question}\nAnswer:"

    included = []
    for pid, text in passages:
        if count_tokens(render(included + [(pid, text)])) <= budget:
            included.append((pid, text))
    return render(included), [p for p, _ in included]


def check_citations(answer, retrieved):
    cited = re.findall(r"\[([^\[\]]+)\]", answer)
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": not bad}

# %% mutant name=variant_chunks_by_count cell=chunking fails=
def chunk_text(text, size, overlap):
    if not (size > 0 and 0 <= overlap < size):
        raise ValueError("size must be positive and 0 <= overlap < size")
    step = size - overlap
    count = 0 if not text else 1 + max(0, -(-(len(text) - size) // step))
    return [text[i * step:i * step + size] for i in range(count)]

# %% mutant name=variant_metrics_numpy cell=metrics fails=
def recall_at_k(ranked, relevant, k):
    top = np.array(list(ranked)[:k], dtype=object)
    return float(np.isin(top, list(relevant)).sum()) / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    rr = []
    for ranked, rel in zip(ranked_lists, relevant_sets):
        hits = [i for i, d in enumerate(ranked) if d in rel]
        rr.append(1.0 / (hits[0] + 1) if hits else 0.0)
    return float(np.mean(rr))


def ndcg_at_k(ranked, gains, k):
    g = np.array([gains.get(d, 0.0) for d in list(ranked)[:k]], dtype=float)
    disc = 1.0 / np.log2(np.arange(2, len(g) + 2))
    ideal = np.sort(np.array(list(gains.values()), dtype=float))[::-1][:k]
    idcg = float((ideal / np.log2(np.arange(2, len(ideal) + 2))).sum())
    return float((g * disc).sum()) / idcg if idcg > 0 else 0.0

# %% mutant name=variant_rrf_defaultdict cell=rrf fails=
from collections import defaultdict


def rrf(rankings, k=60):
    acc = defaultdict(float)
    for ranking in rankings:
        for i, doc in enumerate(ranking):
            acc[doc] += 1 / (k + i + 1)
    return sorted(acc.items(), key=lambda kv: kv[1], reverse=True)
