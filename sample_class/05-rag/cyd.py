# Cyd: the dense-retrieval cell crashes on its first line (a GPU-only FAISS module), so normalize, build_index and
# search are never defined: both dense test cells fail (2 + 2). Everything else is right: 20 - 4 = 16.

# %% answer id=chunking
def chunk_text(text, size, overlap):
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    out, pos = [], 0
    while pos < len(text):
        out.append(text[pos:pos + size])
        if pos + size >= len(text):
            return out
        pos += size - overlap
    return out

# %% answer id=dense
import faiss_gpu_only  # noqa: F401  (no such module)


def normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(vectors, kind="flat", nlist=16, m=16):
    raise NotImplementedError


def search(index, queries, k, nprobe=None, ef_search=None):
    raise NotImplementedError

# %% answer id=bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    N = len(docs_tokens)
    avg = sum(len(d) for d in docs_tokens) / N
    df = Counter(w for d in docs_tokens for w in set(d))
    res = []
    for d in docs_tokens:
        tf = Counter(d)
        s = 0.0
        for w in query_tokens:
            if tf[w]:
                s += math.log(1 + (N - df[w] + 0.5) / (df[w] + 0.5)) * tf[w] / (tf[w] + k1 * (1 - b + b * len(d) / avg))
        res.append(s)
    return np.array(res)

# %% answer id=rrf
def rrf(rankings, k=60):
    total = {}
    for ranking in rankings:
        for r, doc in enumerate(ranking, start=1):
            total[doc] = total.get(doc, 0.0) + 1.0 / (k + r)
    return sorted(total.items(), key=lambda t: t[1], reverse=True)

# %% answer id=mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    D = np.asarray(doc_vecs, float)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    q = np.asarray(query_vec, float)
    q = q / np.linalg.norm(q)
    sel = []
    for _ in range(min(k, len(D))):
        best, val = None, -np.inf
        for i in range(len(D)):
            if i in sel:
                continue
            v = lam * (D[i] @ q) - (1 - lam) * (max(D[i] @ D[j] for j in sel) if sel else 0.0)
            if v > val:
                best, val = i, v
        sel.append(best)
    return sel

# %% answer id=metrics
def recall_at_k(ranked, relevant, k):
    return len(set(list(ranked)[:k]) & set(relevant)) / len(set(relevant))


def mrr(ranked_lists, relevant_sets):
    s = 0.0
    for ranked, rel in zip(ranked_lists, relevant_sets):
        for i, d in enumerate(ranked, start=1):
            if d in rel:
                s += 1 / i
                break
    return s / len(ranked_lists)


def ndcg_at_k(ranked, gains, k):
    dcg = sum(gains.get(d, 0.0) / math.log2(i + 1) for i, d in enumerate(list(ranked)[:k], start=1))
    best = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(best, start=1))
    return dcg / idcg if idcg > 0 else 0.0

# %% answer id=prompt
def build_prompt(question, passages, budget, count_tokens):
    keep = []
    for pid, text in passages:
        trial = keep + [(pid, text)]
        prompt = HEADER + "".join(f"[{a}] {b}\n" for a, b in trial) + f"\nQuestion: {question}\nAnswer:"
        if count_tokens(prompt) <= budget:
            keep = trial
    return HEADER + "".join(f"[{a}] {b}\n" for a, b in keep) + f"\nQuestion: {question}\nAnswer:", [a for a, _ in keep]


def check_citations(answer, retrieved):
    cited = []
    for c in re.findall(r"\[([^\[\]]+)\]", answer):
        if c.strip() not in cited:
            cited.append(c.strip())
    bad = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": bad, "faithful": len(cited) > 0 and len(bad) == 0}
