# Plausible mistakes for 05-rag (see tests/test_mutants.py for the format).

# %% mutant name=overlap_drops_text cell=chunking fails=test_chunking
delete """Fixed-size character chunks with `overlap` characters shared by neighbours."""
replace raise ValueError("need size > 0 and 0 <= overlap < size") => raise ValueError("bad sizes")
replace step = size - overlap => step = size - overlap + 1
replace chunks = [] => chunks, start = [], 0
delete start = 0

# %% mutant name=overlap_repeats_tail cell=chunking fails=test_chunking
delete """Fixed-size character chunks with `overlap` characters shared by neighbours."""
replace raise ValueError("need size > 0 and 0 <= overlap < size") => raise ValueError("bad sizes")
replace <<<
    step = size - overlap
    chunks = []
    start = 0
    while start < len(text):
        chunks.append(text[start:start + size])
        if start + size >= len(text):
            break
        start += step
    return chunks
===
    return [text[i:i + size] for i in range(0, len(text), size - overlap)]
>>>

# %% mutant name=tail_dropped cell=chunking fails=test_chunking
delete """Fixed-size character chunks with `overlap` characters shared by neighbours."""
replace raise ValueError("need size > 0 and 0 <= overlap < size") => raise ValueError("bad sizes")
replace <<<
    step = size - overlap
    chunks = []
    start = 0
    while start < len(text):
        chunks.append(text[start:start + size])
        if start + size >= len(text):
            break
        start += step
    return chunks
===
    if len(text) <= size:
        return [text] if text else []
    return [text[i:i + size] for i in range(0, len(text) - size, size - overlap)]
>>>

# %% mutant name=overlap_ignored cell=chunking fails=test_chunking
delete """Fixed-size character chunks with `overlap` characters shared by neighbours."""
replace raise ValueError("need size > 0 and 0 <= overlap < size") => raise ValueError("bad sizes")
replace <<<
    step = size - overlap
    chunks = []
    start = 0
    while start < len(text):
        chunks.append(text[start:start + size])
        if start + size >= len(text):
            break
        start += step
    return chunks
===
    return [text[i:i + size] for i in range(0, len(text), size)]
>>>

# %% mutant name=docs_not_normalised cell=dense fails=test_dense_flat
delete """Rows of `x` scaled to unit length, as float32."""
replace <<<
    """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
    x = normalize(vectors)
===
    x = np.ascontiguousarray(vectors, dtype=np.float32)
>>>
delete """(scores, ids) of the k best vectors for each normalised query."""

# %% mutant name=queries_not_normalised cell=dense fails=test_dense_flat
delete """Rows of `x` scaled to unit length, as float32."""
delete """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
delete """(scores, ids) of the k best vectors for each normalised query."""
replace return index.search(normalize(queries), k) => return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

# %% mutant name=first_hit_skipped cell=dense fails=test_dense_flat
delete """Rows of `x` scaled to unit length, as float32."""
delete """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
delete """(scores, ids) of the k best vectors for each normalised query."""
replace return index.search(normalize(queries), k) => scores, ids = index.search(normalize(queries), k + 1)  # "skip the query itself"
replace <<<
    scores, ids = index.search(normalize(queries), k + 1)  # "skip the query itself"
===
    scores, ids = index.search(normalize(queries), k + 1)  # "skip the query itself"
    return scores[:, 1:], ids[:, 1:]
>>>

# %% mutant name=l2_metric_ann cell=dense fails=test_dense_ann
delete """Rows of `x` scaled to unit length, as float32."""
delete """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
replace index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT) => index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
replace index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT) => index = faiss.IndexHNSWFlat(d, m)
delete """(scores, ids) of the k best vectors for each normalised query."""

# %% mutant name=search_params_ignored cell=dense fails=test_dense_ann
delete """Rows of `x` scaled to unit length, as float32."""
delete """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
replace <<<
    """(scores, ids) of the k best vectors for each normalised query."""
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
===
>>>

# %% mutant name=okapi_idf_without_one cell=bm25 fails=test_bm25
replace <<<
    """Lucene BM25 score of every document for the query."""
    n_docs = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n_docs
    df = Counter()
    for d in docs_tokens:
        df.update(set(d))
    scores = np.zeros(n_docs)
===
    n = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n
    df = Counter(t for d in docs_tokens for t in set(d))
    out = np.zeros(n)
>>>
delete denom = k1 * (1 - b + b * len(d) / avgdl)
replace if t in tf: => if tf[t]:
replace idf = math.log(1 + (n_docs - df[t] + 0.5) / (df[t] + 0.5)) => idf = math.log((n - df[t] + 0.5) / (df[t] + 0.5))
replace scores[j] += idf * tf[t] / (tf[t] + denom) => out[j] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
replace return scores => return out

# %% mutant name=no_length_normalisation cell=bm25 fails=test_bm25
delete """Lucene BM25 score of every document for the query."""
replace n_docs = len(docs_tokens) => n = len(docs_tokens)
replace <<<
    avgdl = sum(len(d) for d in docs_tokens) / n_docs
    df = Counter()
    for d in docs_tokens:
        df.update(set(d))
===
    df = Counter(t for d in docs_tokens for t in set(d))
>>>
replace scores = np.zeros(n_docs) => out = np.zeros(n)
delete denom = k1 * (1 - b + b * len(d) / avgdl)
replace if t in tf: => if tf[t]:
replace idf = math.log(1 + (n_docs - df[t] + 0.5) / (df[t] + 0.5)) => idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
replace scores[j] += idf * tf[t] / (tf[t] + denom) => out[j] += idf * tf[t] / (tf[t] + k1)
replace return scores => return out

# %% mutant name=query_terms_deduplicated cell=bm25 fails=test_bm25
replace <<<
    """Lucene BM25 score of every document for the query."""
    n_docs = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n_docs
    df = Counter()
    for d in docs_tokens:
        df.update(set(d))
    scores = np.zeros(n_docs)
===
    n = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n
    df = Counter(t for d in docs_tokens for t in set(d))
    out = np.zeros(n)
>>>
replace <<<
        denom = k1 * (1 - b + b * len(d) / avgdl)
        for t in query_tokens:
            if t in tf:
                idf = math.log(1 + (n_docs - df[t] + 0.5) / (df[t] + 0.5))
                scores[j] += idf * tf[t] / (tf[t] + denom)
    return scores
===
        for t in set(query_tokens):
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return out
>>>

# %% mutant name=rrf_without_k cell=rrf fails=test_rrf
delete """Reciprocal rank fusion of several rankings: (id, score) pairs, best first."""
replace scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank) => scores[doc] = scores.get(doc, 0.0) + 1.0 / rank

# %% mutant name=rrf_rank_from_zero cell=rrf fails=test_rrf
delete """Reciprocal rank fusion of several rankings: (id, score) pairs, best first."""
replace for rank, doc in enumerate(ranking, start=1): => for rank, doc in enumerate(ranking):

# %% mutant name=mmr_sum_redundancy cell=mmr fails=test_mmr
delete """Greedy maximal-marginal-relevance selection: indices in the order chosen."""
delete rel = d @ q
delete redundancy = np.full(len(d), -np.inf)
delete penalty = np.where(np.isinf(redundancy), 0.0, redundancy)
replace score = lam * rel - (1 - lam) * penalty => score = lam * (d @ q) - (1 - lam) * (d @ d[chosen].T).sum(axis=1)
replace best = int(np.argmax(score)) => chosen.append(int(np.argmax(score)))
delete chosen.append(best)
delete redundancy = np.maximum(redundancy, d @ d[best])

# %% mutant name=mmr_dot_not_cosine cell=mmr fails=test_mmr
delete """Greedy maximal-marginal-relevance selection: indices in the order chosen."""
delete q = q / np.linalg.norm(q)
delete d = d / np.linalg.norm(d, axis=1, keepdims=True)
delete rel = d @ q
delete redundancy = np.full(len(d), -np.inf)
replace <<<
        penalty = np.where(np.isinf(redundancy), 0.0, redundancy)
===
        red = (d @ d[chosen].T).max(axis=1) if chosen else np.zeros(len(d))
>>>
replace score = lam * rel - (1 - lam) * penalty => score = lam * (d @ q) - (1 - lam) * red
replace best = int(np.argmax(score)) => chosen.append(int(np.argmax(score)))
delete chosen.append(best)
delete redundancy = np.maximum(redundancy, d @ d[best])

# %% mutant name=ndcg_without_log_discount cell=metrics fails=test_metrics
delete """Fraction of the relevant ids among the first k."""
delete relevant = set(relevant)
replace return len(relevant.intersection(list(ranked)[:k])) / len(relevant) => return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))
delete """Mean reciprocal rank (ranks from 1)."""
replace for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True): => for ranked, rel in zip(ranked_lists, relevant_sets):
replace if doc in relevant: => if doc in rel:
replace total += 1.0 / rank => total += 1 / rank
replace <<<
    """Normalised discounted cumulative gain at k, linear gains, log2(rank + 1) discount."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(list(ranked)[:k], start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0
===
    dcg = sum(gains.get(doc, 0.0) / rank for rank, doc in enumerate(list(ranked)[:k], start=1))
    idcg = sum(g / rank for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
    return dcg / idcg if idcg else 0.0
>>>

# %% mutant name=mrr_rank_off_by_one cell=metrics fails=test_metrics
delete """Fraction of the relevant ids among the first k."""
delete relevant = set(relevant)
replace return len(relevant.intersection(list(ranked)[:k])) / len(relevant) => return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))
delete """Mean reciprocal rank (ranks from 1)."""
replace for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True): => for ranked, rel in zip(ranked_lists, relevant_sets):
replace for rank, doc in enumerate(ranked, start=1): => for rank, doc in enumerate(ranked):
replace if doc in relevant: => if doc in rel:
replace total += 1.0 / rank => total += 1 / (rank + 2)
delete """Normalised discounted cumulative gain at k, linear gains, log2(rank + 1) discount."""
delete ideal = sorted(gains.values(), reverse=True)[:k]
replace idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1)) => idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
replace return dcg / idcg if idcg > 0 else 0.0 => return dcg / idcg if idcg else 0.0

# %% mutant name=ndcg_ideal_from_retrieved_only cell=metrics fails=test_metrics
delete """Fraction of the relevant ids among the first k."""
delete relevant = set(relevant)
replace return len(relevant.intersection(list(ranked)[:k])) / len(relevant) => return len(set(relevant) & set(list(ranked)[:k])) / len(set(relevant))
delete """Mean reciprocal rank (ranks from 1)."""
replace for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True): => for ranked, rel in zip(ranked_lists, relevant_sets):
replace if doc in relevant: => if doc in rel:
replace total += 1.0 / rank => total += 1 / rank
replace <<<
    """Normalised discounted cumulative gain at k, linear gains, log2(rank + 1) discount."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(list(ranked)[:k], start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0
===
    got = [gains.get(doc, 0.0) for doc in list(ranked)[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(got))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(got, reverse=True)))
    return dcg / idcg if idcg else 0.0
>>>

# %% mutant name=recall_divided_by_k cell=metrics fails=test_metrics
delete """Fraction of the relevant ids among the first k."""
delete relevant = set(relevant)
replace return len(relevant.intersection(list(ranked)[:k])) / len(relevant) => return len(set(relevant) & set(list(ranked)[:k])) / k
delete """Mean reciprocal rank (ranks from 1)."""
replace for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True): => for ranked, rel in zip(ranked_lists, relevant_sets):
replace if doc in relevant: => if doc in rel:
replace total += 1.0 / rank => total += 1 / rank
delete """Normalised discounted cumulative gain at k, linear gains, log2(rank + 1) discount."""
delete ideal = sorted(gains.values(), reverse=True)[:k]
replace idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1)) => idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k], start=1))
replace return dcg / idcg if idcg > 0 else 0.0 => return dcg / idcg if idcg else 0.0

# %% mutant name=budget_strict_or_passages_only cell=prompt fails=test_prompt
delete """The prompt with as many ranked passages as fit in `budget` tokens, and their ids."""
replace included = [] => included, used = [], 0
replace <<<

    def render(items):
        return HEADER + "".join(f"[{pid}] {text}\n" for pid, text in items) + f"\nQuestion: {question}\nAnswer:"

===
>>>
replace <<<
        if count_tokens(render(included + [(pid, text)])) <= budget:
===
        cost = count_tokens(f"[{pid}] {text}\n")
        if used + cost < budget:
>>>
replace <<<
            included.append((pid, text))
===
            included.append((pid, text))
            used += cost
    prompt = HEADER + "".join(f"[{p}] {t}\n" for p, t in included) + f"\nQuestion: {question}\nAnswer:"
>>>
replace return render(included), [pid for pid, _ in included] => return prompt, [p for p, _ in included]
replace <<<
    """Cited ids, unsupported ones, and whether every citation was retrieved."""
    cited = []
    for cid in re.findall(r"\[([^\[\]]+)\]", answer):
        cid = cid.strip()
        if cid not in cited:
            cited.append(cid)
    unsupported = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": unsupported, "faithful": len(cited) > 0 and not unsupported}
===
    cited = list(dict.fromkeys(c.strip() for c in re.findall(r"\[([^\[\]]+)\]", answer)))
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": bool(cited) and not bad}
>>>

# %% mutant name=budget_stops_at_first_misfit cell=prompt fails=test_prompt
replace <<<
    """The prompt with as many ranked passages as fit in `budget` tokens, and their ids."""
===
    def render(items):
        return HEADER + "".join(f"[{p}] {t}\n" for p, t in items) + f"\nQuestion: {question}\nAnswer:"

>>>
replace <<<

    def render(items):
        return HEADER + "".join(f"[{pid}] {text}\n" for pid, text in items) + f"\nQuestion: {question}\nAnswer:"

===
>>>
replace if count_tokens(render(included + [(pid, text)])) <= budget: => if count_tokens(render(included + [(pid, text)])) > budget:
replace <<<
        if count_tokens(render(included + [(pid, text)])) > budget:
===
        if count_tokens(render(included + [(pid, text)])) > budget:
            break
>>>
replace <<<
            included.append((pid, text))
===
        included.append((pid, text))
>>>
replace return render(included), [pid for pid, _ in included] => return render(included), [p for p, _ in included]
replace <<<
    """Cited ids, unsupported ones, and whether every citation was retrieved."""
    cited = []
    for cid in re.findall(r"\[([^\[\]]+)\]", answer):
        cid = cid.strip()
        if cid not in cited:
            cited.append(cid)
    unsupported = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": unsupported, "faithful": len(cited) > 0 and not unsupported}
===
    cited = list(dict.fromkeys(c.strip() for c in re.findall(r"\[([^\[\]]+)\]", answer)))
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": bool(cited) and not bad}
>>>

# %% mutant name=uncited_answer_called_faithful cell=prompt fails=test_citations
replace <<<
    """The prompt with as many ranked passages as fit in `budget` tokens, and their ids."""
===
    def render(items):
        return HEADER + "".join(f"[{p}] {t}\n" for p, t in items) + f"\nQuestion: {question}\nAnswer:"

>>>
replace <<<

    def render(items):
        return HEADER + "".join(f"[{pid}] {text}\n" for pid, text in items) + f"\nQuestion: {question}\nAnswer:"

===
>>>
replace return render(included), [pid for pid, _ in included] => return render(included), [p for p, _ in included]
replace <<<
    """Cited ids, unsupported ones, and whether every citation was retrieved."""
    cited = []
    for cid in re.findall(r"\[([^\[\]]+)\]", answer):
        cid = cid.strip()
        if cid not in cited:
            cited.append(cid)
    unsupported = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": unsupported, "faithful": len(cited) > 0 and not unsupported}
===
    cited = re.findall(r"\[([^\[\]]+)\]", answer)
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": not bad}
>>>

# %% variant name=variant_chunks_by_count cell=chunking
def chunk_text(text, size, overlap):
    if not (size > 0 and 0 <= overlap < size):
        raise ValueError("size must be positive and 0 <= overlap < size")
    step = size - overlap
    count = 0 if not text else 1 + max(0, -(-(len(text) - size) // step))
    return [text[i * step:i * step + size] for i in range(count)]

# %% variant name=variant_metrics_numpy cell=metrics
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

# %% variant name=variant_rrf_defaultdict cell=rrf
from collections import defaultdict


def rrf(rankings, k=60):
    acc = defaultdict(float)
    for ranking in rankings:
        for i, doc in enumerate(ranking):
            acc[doc] += 1 / (k + i + 1)
    return sorted(acc.items(), key=lambda kv: kv[1], reverse=True)

# %% variant name=variant_dense_factory cell=dense
import faiss


def normalize(x):
    x = np.array(x, dtype=np.float32, order="C")  # a copy: faiss.normalize_L2 works in place
    faiss.normalize_L2(x)
    return x


def build_index(vectors, kind="flat", nlist=16, m=16):
    specs = {"flat": "Flat", "ivf": f"IVF{nlist},Flat", "hnsw": f"HNSW{m}"}
    if kind not in specs:
        raise ValueError(f"kind must be one of {sorted(specs)}")
    x = normalize(vectors)
    index = faiss.index_factory(x.shape[1], specs[kind], faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


def search(index, queries, k, nprobe=None, ef_search=None):
    params = faiss.ParameterSpace()
    if nprobe is not None:
        params.set_index_parameter(index, "nprobe", nprobe)
    if ef_search is not None:
        params.set_index_parameter(index, "efSearch", ef_search)
    return index.search(normalize(queries), k)

# %% variant name=variant_bm25_matrix cell=bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    vocab = {t: i for i, t in enumerate(sorted({t for d in docs_tokens for t in d}))}
    tf = np.zeros((len(docs_tokens), len(vocab)))
    for j, d in enumerate(docs_tokens):
        for t, c in Counter(d).items():
            tf[j, vocab[t]] = c
    lengths = tf.sum(axis=1)
    n_t = (tf > 0).sum(axis=0)
    idf = np.log1p((len(docs_tokens) - n_t + 0.5) / (n_t + 0.5))
    part = idf * tf / (tf + k1 * (1 - b + b * lengths / lengths.mean())[:, None])
    weights = np.zeros(len(vocab))
    for t in query_tokens:  # a repeated query token counts each time; an unknown one adds nothing
        if t in vocab:
            weights[vocab[t]] += 1
    return part @ weights

# %% variant name=variant_mmr_loops cell=mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    docs = [np.asarray(d, dtype=float) for d in doc_vecs]
    query = np.asarray(query_vec, dtype=float)
    selected, left = [], list(range(len(docs)))
    while left and len(selected) < k:
        def value(i):
            redundancy = max((cos(docs[i], docs[j]) for j in selected), default=0.0)
            return lam * cos(query, docs[i]) - (1 - lam) * redundancy
        best = max(left, key=value)  # the first of equal values, as argmax
        selected.append(best)
        left.remove(best)
    return selected

# %% variant name=variant_prompt_incremental cell=prompt
def build_prompt(question, passages, budget, count_tokens):
    tail = f"\nQuestion: {question}\nAnswer:"
    body, ids = "", []
    for pid, text in passages:
        line = f"[{pid}] {text}\n"
        if count_tokens(HEADER + body + line + tail) <= budget:
            body, ids = body + line, ids + [pid]
    return HEADER + body + tail, ids


def check_citations(answer, retrieved):
    cited = list(dict.fromkeys(m.strip() for m in re.findall(r"\[(.*?)\]", answer)))
    retrieved = set(retrieved)
    unsupported = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": unsupported, "faithful": len(cited) > 0 and len(unsupported) == 0}

# %% mutant name=empty_prompt_over_budget_raises cell=prompt fails=test_prompt
replace <<<
    for pid, text in passages:
        if count_tokens(render(included + [(pid, text)])) <= budget:
===
    if count_tokens(render([])) > budget:
        raise ValueError("the budget is smaller than the prompt without passages")
    for pid, text in passages:
        if count_tokens(render(included + [(pid, text)])) <= budget:
>>>

# %% mutant name=citation_ids_not_stripped cell=prompt fails=test_citations
replace <<<
        cid = cid.strip()
        if cid not in cited:
===
        if cid not in cited:
>>>
