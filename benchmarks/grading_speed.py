"""Grading speed: the sample class of one week graded with 1 and with N workers, and the overhead of grading
over plainly executing the same notebook (``jupyter nbconvert --execute``).

Usage: python benchmarks/grading_speed.py [--week 00-spark-capacity] [--workers 2] [--out benchmarks/grading_speed.md]
Each configuration grades in a fresh temporary course built from this checkout (sandbox on, as `sparkcourse grade`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _course(tmp: Path, week: str) -> Path:
    """A temporary course with the week built and its sample class submitted."""
    from sparkcourse.grader import course

    root = tmp / "course"
    assert all(r.ok for r in course.copy_course(ROOT, root, [week])), "build failed"
    return root


def grade_seconds(week: str, workers: int) -> tuple[float, dict[str, float]]:
    """Wall time of `sparkcourse grade` over the sample class, and each gradable submission's score."""
    from sparkcourse.grader import course

    with tempfile.TemporaryDirectory() as tmp:
        root = _course(Path(tmp), week)
        t0 = time.perf_counter()
        results = course.grade(root, [week], progress=False, workers=workers)
        seconds = time.perf_counter() - t0
        table = course.report(root, show=False)
        scores = {r.student: table.scores.get(r.student, {}).get(week) for r in results if r.ok}
    return seconds, scores


def plain_seconds(week: str, student: str = "ada") -> tuple[float, float]:
    """(nbconvert --execute of one sample submission, sparkcourse grade of the same submission alone)."""
    from sparkcourse.grader import course

    with tempfile.TemporaryDirectory() as tmp:
        root = _course(Path(tmp), week)
        nb = root / "submitted" / student / week / f"{week}.ipynb"
        work = Path(tmp) / "plain"
        work.mkdir()
        shutil.copy2(nb, work / nb.name)
        env = dict(os.environ, SPARKCOURSE_PROFILE="tiny", NBGRADER_EXECUTION="autograde",
                   PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--ExecutePreprocessor.timeout=120", "--allow-errors", "--output", "out.ipynb", nb.name],
                       cwd=work, env=env, check=True, capture_output=True)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        course.grade(root, [week], progress=False, workers=1, students=[student])
        graded = time.perf_counter() - t0
    return plain, graded



def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process so far (load-independent, unlike wall time)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def class_run(weeks: list[str], workers: int) -> dict:
    """Grade each week's sample class with ``sparkcourse grade`` in a fresh course: wall time, the CPU time of the
    grading processes, the load average, and every submission's per-cell scores (to compare runs)."""
    from sparkcourse.gpu import load_average
    from sparkcourse.grader import course

    out = {}
    for week in weeks:
        with tempfile.TemporaryDirectory(dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None) as tmp:
            root = _course(Path(tmp), week)
            load0, cpu0, t0 = load_average()[0], _children_cpu(), time.perf_counter()
            results = course.grade(root, [week], progress=False, workers=workers)
            wall, cpu, load1 = time.perf_counter() - t0, _children_cpu() - cpu0, load_average()[0]
            table = course.report(root, show=False)
            cells = {r.student: course.cell_scores(root, week, r.student) for r in results if r.ok}
            out[week] = {"wall": round(wall, 1), "cpu": round(cpu, 1), "load": [round(load0, 1), round(load1, 1)],
                         "submissions": len(results),
                         "scores": {s: table.scores.get(s, {}).get(week) for s in sorted(table.scores)},
                         "cells": cells}
        print(week, {k: v for k, v in out[week].items() if k != "cells"}, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print (or write) a markdown report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--week", default="00-spark-capacity")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--class-run", metavar="JSON", help="grade the sample class of every week (or --weeks), write "
                   "wall/CPU seconds, load and per-cell scores as JSON, and stop")
    p.add_argument("--weeks", nargs="*", help="with --class-run: these weeks (default: every ready week)")
    args = p.parse_args(argv)
    if args.class_run:
        from sparkcourse import weeks as registry

        names = args.weeks or [w.id for w in registry.ready(registry.registry_for(ROOT))]
        Path(args.class_run).write_text(json.dumps(class_run(names, args.workers), indent=1))
        return 0
    from sparkcourse.gpu import cpu_model, load_average
    from sparkcourse.grader import sandbox

    def _load() -> str:
        return " ".join(f"{v:.1f}" for v in load_average())

    load_start = _load()
    t1, s1 = grade_seconds(args.week, 1)
    tn, sn = grade_seconds(args.week, args.workers)
    plain, graded = plain_seconds(args.week)
    load_end = _load()
    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["benchmarks/grading_speed.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"# Grading speed: week {args.week}, sample class", "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- machine: {cpu_model()}, {os.cpu_count()} vCPUs, Python {platform.python_version()}; load average "
        f"(1, 5, 15 min) at start {load_start}, at end {load_end} (a shared machine: other jobs ran)",
        f"- sandbox: {sandbox.isolation_prefix()[1]}", "",
        "| measurement | seconds |", "|---|---|",
        f"| grade the sample class ({len(s1)} gradable submissions), 1 worker | {t1:.1f} |",
        f"| grade the sample class, {args.workers} workers | {tn:.1f} |",
        f"| speed-up with {args.workers} workers | {t1 / tn:.2f}× |",
        f"| `jupyter nbconvert --execute` of ada's notebook | {plain:.1f} |",
        f"| `sparkcourse grade` of ada's notebook alone | {graded:.1f} |",
        f"| grading overhead (sanitise, sandbox, gradebook) | {graded - plain:+.1f} ({graded / plain:.2f}×) |", "",
        f"Scores agree between the two runs: {s1 == sn} ({s1}).",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0 if s1 == sn else 1


if __name__ == "__main__":
    sys.exit(main())
