"""Write week 05's retrieval snapshot: passages, resolved questions and the embedding cache.

Run from the repository root:

    python tools/make_rag_corpus.py              # corpus.jsonl + questions.jsonl (from tools/rag_questions.tsv)
    python tools/make_rag_corpus.py --keep-corpus --embed passages,questions,chunks   # the embedding cache

Passages come from ``build_corpus`` below (markdown cells of authoring/*.py except week 05,
README.md, module docstrings). A question is a line ``question<TAB>evidence`` in tools/rag_questions.tsv; its
answer is every passage that contains the evidence text. tests/weeks/test_w05_rag.py checks that the shipped questions
still resolve in the snapshot and that unchanged sources still produce the same passages.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparkcourse import embeddings  # noqa: E402
from sparkcourse.grader.authoring import parse  # noqa: E402
from sparkcourse.labs import w05_rag as rc  # noqa: E402

EXCLUDED_WEEKS = ("05-rag",)  # the week does not retrieve its own text


def markdown_of_authoring(text: str) -> str:
    """The markdown cells of an authoring file, joined by blank lines (comment markers removed)."""
    return "\n\n".join(c.source for c in parse(text).cells if c.cell_type == "markdown")


def module_docstrings(package_dir: Path) -> str:
    """Markdown with one section per ``sparkcourse`` module: its name as heading, its docstring as text."""
    parts = []
    for path in sorted(package_dir.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc:
            parts.append(f"# sparkcourse.{path.stem}\n\n{doc}" if path.stem != "__init__" else f"# sparkcourse\n\n{doc}")
    return "\n\n".join(parts)


def source_texts(root: Path) -> dict[str, str]:
    """Source name -> markdown, for every document the corpus is made from (sorted, weeks first)."""
    out = {}
    for path in sorted((root / "authoring").glob("*.py")):
        if path.stem not in EXCLUDED_WEEKS:
            out[path.stem] = markdown_of_authoring(path.read_text())
    out["README"] = (root / "README.md").read_text()
    out["sparkcourse-modules"] = module_docstrings(root / "sparkcourse")
    return out


def build_corpus(root: Path) -> list[dict]:
    """All passages of the course's docs under ``root``; each carries ``source_sha``, the hash of its source text."""
    passages = []
    for source, text in source_texts(root).items():
        for p in rc.extract_passages(text, source):
            passages.append({**p, "source_sha": embeddings.text_sha(text)})
    return passages


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
    passages = rc.load_corpus() if args.keep_corpus else build_corpus(ROOT)
    if not args.keep_corpus:
        rc.CORPUS_FILE.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages))
    questions = resolve(passages, ROOT / "tools" / "rag_questions.tsv")
    rc.QUESTIONS_FILE.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    print(f"{len(passages)} passages, {len(questions)} questions")
    if args.embed:
        import numpy as np

        out = Path(args.out) if args.out else rc.CACHE_FILE
        if args.out and rc.CACHE_FILE.exists():
            shutil.copy2(rc.CACHE_FILE, out)  # the sets not re-embedded stay as shipped
        model = embeddings.load_encoder(args.model, args.device)
        for name, texts in rc.embedding_sets(passages, questions).items():
            if name in args.embed.split(","):
                vecs = embeddings.embed(texts, model).astype(np.float16)
                embeddings.save_cached(out, name, texts, vecs)
                print(name, vecs.shape)

if __name__ == "__main__":
    main()
