"""Write week 05's retrieval snapshot: passages, resolved questions and the embedding cache.

Run from the repository root:

    python tools/make_rag_corpus.py              # corpus.jsonl + questions.jsonl (from tools/rag_questions.tsv)
    python tools/make_rag_corpus.py --keep-corpus --embed passages,questions,chunks   # the embedding cache

Passages come from ``sparkcourse.rag_corpus.build_corpus`` (markdown cells of authoring/*.py except week 05,
README.md, module docstrings). A question is a line ``question<TAB>evidence`` in tools/rag_questions.tsv; its
answer is every passage that contains the evidence text. tests/test_rag.py checks that the shipped questions
still resolve in the snapshot and that unchanged sources still produce the same passages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparkcourse import rag_corpus as rc  # noqa: E402


def resolve(passages: list[dict], question_file: Path) -> list[dict]:
    """Questions with the ids of the passages that contain their evidence text."""
    out = []
    for n, line in enumerate(question_file.read_text().splitlines()):
        if not line.strip() or line.startswith("#"):
            continue
        question, evidence = line.split("\t")
        answers = [p["id"] for p in passages if evidence in " ".join(p["text"].split())]
        if not answers:
            raise SystemExit(f"line {n + 1}: no passage contains {evidence!r}")
        out.append({"qid": f"q{len(out):03d}", "question": question, "answers": answers, "evidence": evidence})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embed", default="", help="comma-separated sets to (re)embed: passages,questions,chunks")
    ap.add_argument("--model", default=None, help="a copy of all-MiniLM-L6-v2 (default: the gt package's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the cache here instead of the package data")
    ap.add_argument("--keep-corpus", action="store_true", help="resolve questions against the shipped snapshot")
    args = ap.parse_args()
    passages = rc.load_corpus() if args.keep_corpus else rc.build_corpus(ROOT)
    if not args.keep_corpus:
        rc.CORPUS_FILE.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages))
    questions = resolve(passages, ROOT / "tools" / "rag_questions.tsv")
    rc.QUESTIONS_FILE.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    print(f"{len(passages)} passages, {len(questions)} questions")
    if args.embed:
        import numpy as np

        old = dict(np.load(rc.CACHE_FILE)) if rc.CACHE_FILE.exists() else {}
        model = rc.load_encoder(args.model, args.device)
        for name, texts in rc.embedding_sets(passages, questions).items():
            if name in args.embed.split(","):
                old[name] = rc.embed(texts, model).astype(np.float16)
                old[f"{name}__hash"] = np.array(rc.texts_hash(texts))
                print(name, old[name].shape)
        np.savez_compressed(args.out or rc.CACHE_FILE, **old)

if __name__ == "__main__":
    main()
