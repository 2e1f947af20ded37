"""The ``sparkcourse`` command: new | check | map | author | build | sample-class | grade | feedback | report | bundle |
doctor | smoke | demo.

Only ``doctor`` works from the student bundle; every other command is the instructor's and imports
``sparkcourse.grader`` when it runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sparkcourse import weeks


def _print_results(step: str, results: list) -> int:
    """Print a step's outcome; malformed submissions are reported apart (expected in the sample class)."""
    malformed = [r for r in results if not r.ok and r.message.startswith(("malformed", "missing"))]
    bad = [r for r in results if not r.ok and r not in malformed]
    total = sum(r.seconds for r in results)
    extra = f", {len(malformed)} malformed (reported, not graded)" if malformed else ""
    print(f"{step}: {len(results) - len(bad) - len(malformed)} ok{extra}, {len(bad)} failed ({total:.1f} s)")
    for r in [*malformed, *bad]:
        who = f"{r.assignment}/{r.student}" if r.student else r.assignment
        first = (r.message.strip().splitlines() or ["(no message)"])[-1]
        print(f"  {'~' if r in malformed else '!'} {who}: {first[:300]}")
    return len(bad)


def doctor() -> int:
    """Print device, memory, profile, package versions and whether the offline models load; 0 if all is well."""
    import importlib.metadata as md

    import sparkcourse
    from sparkcourse import gpu

    prof = sparkcourse.current()
    sparkcourse.offline_if_tiny(prof)  # never forced offline in spark: the models below are package files
    info = gpu.detect()
    print(f"device   : {info.describe()}")
    avail = gpu.meminfo_bytes("MemAvailable")
    if avail:
        print(f"memory   : {avail / 1e9:.1f} GB available of {(gpu.meminfo_bytes() or 0) / 1e9:.1f} GB (/proc/meminfo)")
    print(f"profile  : {prof.name}")
    problems = 0
    for name in weeks.deps():  # the course's base set plus every ready week's extras (sparkcourse/weeks.toml)
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
    for name, ok, detail in gpu.smoke_checks():  # numba-cuda, FP8, bitsandbytes 4-bit, memory (skipped without CUDA)
        print(f"gpu {name:18s}: {'ok' if ok else 'FAILED'} — {detail}")
        problems += not ok
    print("doctor: all good" if not problems else f"doctor: {problems} problem(s)")
    return 1 if problems else 0


def demo(root: Path) -> int:
    """The course's main job: build, sample class, grade, feedback, report, bundle."""
    from sparkcourse.grader import course

    t0 = time.perf_counter()
    if _print_results("build", course.build(root)):
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparkcourse", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="course root (default: found from the cwd)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("new", help="scaffold a week: NN-topic (authoring, reference, lab, tests, mutants, class)")
    p.add_argument("week", help="NN-topic, e.g. 08-moe")
    p.add_argument("--title", default=None, help="the week's title (default: from the topic)")
    p = sub.add_parser("check", help="author, build, grade the sample class, run mutants: one week's health")
    p.add_argument("weeks", nargs="*", help="NN-topic ids (default: every ready week)")
    p.add_argument("--workers", "-j", type=int, default=None)
    p = sub.add_parser("map", help="write the README's course map from sparkcourse/weeks.toml")
    p.add_argument("--check", action="store_true", help="only check: exit 1 if the README's map is stale")
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
    sub.add_parser("doctor", help="check device, versions, offline models and (on a GPU) numba-cuda, FP8, 4-bit")
    p = sub.add_parser("smoke", help="run every ready week's authoring/NN-topic.py as a script; report per week")
    p.add_argument("weeks", nargs="*", help="NN-topic ids (default: every ready week)")
    p.add_argument("--profile", choices=("tiny", "spark"), default=None, help="default: this machine's profile")
    p.add_argument("--no-standin", action="store_true", help="load real hub models (default: SPARKCOURSE_STANDIN=1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per week (default 600)")
    p.add_argument("--out", type=Path, default=None, help="write the report as a markdown table here")
    p.add_argument("--logs", type=Path, default=None, help="keep each week's output here (default: a temp dir)")
    sub.add_parser("demo", help="build, grade the sample class, feedback, report, bundle")
    return parser


def _course_map(root: Path, check: bool) -> int:
    readme = root / "README.md"
    text = readme.read_text()
    fresh = weeks.with_course_map(text)
    if check:
        print("course map: up to date" if fresh == text else "course map: stale (run `sparkcourse map`)")
        return 0 if fresh == text else 1
    readme.write_text(fresh)
    print("README.md: course map written")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    args.command = " ".join(["sparkcourse", *(sys.argv[1:] if argv is None else argv)])  # for reports
    if args.cmd == "doctor":
        return doctor()
    from sparkcourse.grader import course

    try:
        return _run(args, course)
    except course.GradingRefused as exc:
        print(f"sparkcourse {args.cmd}: refused to grade: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, course) -> int:
    """One instructor command."""
    root = (args.root or course.find_root()).resolve()
    only = getattr(args, "assignments", None) or None
    if args.cmd == "new":
        from sparkcourse.grader.scaffold import new_week

        for path in new_week(root, args.week, args.title):
            print(path.relative_to(root))
        return 0
    if args.cmd == "check":
        from sparkcourse.grader.check import check_weeks

        return check_weeks(root, args.weeks or [w.id for w in weeks.ready(weeks.registry_for(root))],
                           workers=args.workers)
    if args.cmd == "map":
        return _course_map(root, args.check)
    if args.cmd == "smoke":
        from sparkcourse.grader.smoke import run_smoke

        return run_smoke(root, args.weeks, args.profile, not args.no_standin, args.timeout, args.out, args.logs,
                         command=args.command)
    if args.cmd == "author":
        from sparkcourse.grader.authoring import write_sources

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
        return 0  # a broken submission is reported in reports/grade.json, not fatal to the class
    if args.cmd == "feedback":
        return 1 if _print_results("feedback", course.feedback(root, only)) else 0
    if args.cmd == "report":
        course.report(root)
        return 0
    if args.cmd == "bundle":
        print(course.bundle(root, args.out))
        return 0
    return demo(root)


if __name__ == "__main__":
    sys.exit(main())
