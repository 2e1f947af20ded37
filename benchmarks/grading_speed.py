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
import re
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


def plain_seconds(week: str, student: str = "ada", repeats: int = 1) -> list[dict]:
    """``repeats`` times, in one fresh course (the pre-flight done first, untimed): ``jupyter nbconvert --execute``
    of one sample submission, and ``sparkcourse grade`` of that submission alone — wall and CPU seconds (the
    processes' user + system time) of each command, the submission's own grading time (``StepResult.seconds``: with
    grading workers, the worker's start is not in it), and the load average before each."""
    from sparkcourse.gpu import load_average
    from sparkcourse.grader import course

    rows = []
    with tempfile.TemporaryDirectory(dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None) as tmp:
        root = _course(Path(tmp), week)
        from sparkcourse.grader.sandbox import isolation_prefix

        course.preflight(root, [week], course.NOTEBOOK_TIMEOUT, isolation_prefix()[0], 1)  # cached afterwards
        nb = root / "submitted" / student / week / f"{week}.ipynb"
        work = Path(tmp) / "plain"
        work.mkdir()
        shutil.copy2(nb, work / nb.name)
        env = dict(os.environ, SPARKCOURSE_PROFILE="tiny", NBGRADER_EXECUTION="autograde",
                   PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
        for _ in range(repeats):
            load, cpu0, t0 = load_average()[0], _children_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                            "--ExecutePreprocessor.timeout=120", "--allow-errors", "--output", "out.ipynb", nb.name],
                           cwd=work, env=env, check=True, capture_output=True)
            plain, plain_cpu = time.perf_counter() - t0, _children_cpu() - cpu0
            load2, cpu0, t0 = load_average()[0], _children_cpu(), time.perf_counter()
            (r,) = course.grade(root, [week], progress=False, workers=1, students=[student])
            graded, graded_cpu = time.perf_counter() - t0, _children_cpu() - cpu0
            assert r.ok, r.message
            rows.append({"load": round(load, 1), "nbconvert": plain, "nbconvert_cpu": plain_cpu,
                         "load_graded": round(load2, 1), "grade": graded, "grade_cpu": graded_cpu,
                         "submission": r.seconds})
    return rows


# ---- where one submission's time goes -------------------------------------------------------------------------

CHILD = r"""
import json, os, resource, sys, time
T = {"start": time.time()}
from nbgrader.apps.nbgraderapp import NbGraderApp
import nbgrader.converters.autograde as ag, nbgrader.converters.base as cb, nbgrader.preprocessors as pp
from nbgrader import api
import nbclient.client as ncl, nbconvert.writers, nbconvert.preprocessors
import sparkcourse.grader.sandbox.execute as ex, sparkcourse.grader.metadata as md, sparkcourse.grader.feedback
T["imported"] = time.time()
acc = {}
def wrap(obj, name, key):
    orig = getattr(obj, name)
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
    setattr(obj, name, timed)
wrap(api.Gradebook, "__init__", "gradebook")
wrap(api.Gradebook, "close", "gradebook")
wrap(ag.Autograde, "init_assignment", "init_assignment")
for name in ["ClearOutput", "DeduplicateIds", "OverwriteKernelspec", "OverwriteCells", "CheckCellMetadata"]:
    wrap(getattr(pp, name), "preprocess", "sanitise")
wrap(ex.DropDuplicateGradeIds, "preprocess", "sanitise")
wrap(md.TrustReleaseMetadata, "preprocess", "sanitise")
for name in ["IgnorePattern", "LimitOutput", "SaveAutoGrades", "AssignLatePenalties"]:
    wrap(getattr(pp, name), "preprocess", "after:" + name)
wrap(nbconvert.preprocessors.ClearMetadataPreprocessor, "preprocess", "after:ClearMetadata")
wrap(ex.SandboxedExecute, "preprocess", "execute")
wrap(ex.SandboxedExecute, "_locked_hashes", "locked_hashes")
wrap(ex.SandboxedExecute, "start_new_kernel", "kernel_launch")
wrap(ncl.NotebookClient, "start_new_kernel_client", "kernel_ready")
wrap(ncl.NotebookClient, "_cleanup_kernel", "kernel_stop")
wrap(ex.SandboxedExecute, "preprocess_cell", "cells")
wrap(ex, "kill_uid", "kill_uid")
wrap(nbconvert.writers.FilesWriter, "write", "write")
wrap(cb.BaseConverter, "convert_single_notebook", "convert")
_launch, _ready = ex.SandboxedExecute.start_new_kernel, ncl.NotebookClient.start_new_kernel_client
def launch(self, **kw):
    T.setdefault("launch", time.time())
    return _launch(self, **kw)
def ready(self, **kw):
    try:
        return _ready(self, **kw)
    finally:
        T.setdefault("ready", time.time())
ex.SandboxedExecute.start_new_kernel, ncl.NotebookClient.start_new_kernel_client = launch, ready
def run():
    T["run"] = time.time()
    try:
        NbGraderApp.launch_instance(argv=sys.argv[2:])
    except SystemExit:
        pass
    T["end"] = time.time()
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stderr.write("[breakdown] " + json.dumps({"T": T, "acc": acc, "cpu_self": r.ru_utime + r.ru_stime,
                                                  "cpu_children": c.ru_utime + c.ru_stime}) + "\n")
    sys.stderr.flush()
if sys.argv[1] == "fork":  # as a grading worker does: imports done once, each submission in a fresh fork
    pid = os.fork()
    if pid == 0:
        T["forked"] = time.time()
        run()
        os._exit(0)
    os.waitpid(pid, 0)
else:
    run()
"""


def breakdown_once(root: Path, week: str, student: str, fork: bool) -> dict:
    """One instrumented ``nbgrader autograde`` of one submission, in its namespaces as ``sparkcourse grade`` runs
    it (``fork``: in a fork of a process that has done the imports, as a grading worker does)."""
    from sparkcourse.gpu import load_average
    from sparkcourse.grader.sandbox import isolation_prefix

    prefix, _ = isolation_prefix()
    env = dict(os.environ, PYTHONUNBUFFERED="1", SPARKCOURSE_TIMING="1", PYTHONPATH=str(ROOT),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    load, cpu0, t0 = load_average()[0], _children_cpu(), time.time()
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD, "fork" if fork else "process", "autograde", week,
                           "--student", student, "--force"], cwd=root, env=env, capture_output=True, text=True)
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    out = proc.stdout + proc.stderr
    line = [ln for ln in out.splitlines() if ln.startswith("[breakdown] ")]
    assert line, out[-3000:]
    d = json.loads(line[-1][len("[breakdown] "):])
    T, acc = {k: v - t0 for k, v in d["T"].items()}, d["acc"]
    k = {m.group(1): float(m.group(2)) - t0 for m in re.finditer(r"\[sparkcourse.grader.timing\] kernel (\w+) "
                                                                  r"([\d.]+)", out)}
    once = " (once per worker)" if fork else ""
    phases = {
        f"process start: interpreter, namespaces prefix{once}": T["start"],
        f"imports: nbgrader, nbconvert, SQLAlchemy, the sandbox's grader side{once}": T["imported"] - T["start"],
        "fork of the worker": T["forked"] - T["run"] if fork else 0.0,
        "gradebook: student, submission, notebook records (init_assignment)": acc.get("init_assignment", 0.0),
        "sanitising preprocessors (ClearOutput, TrustReleaseMetadata, OverwriteCells, ...)": acc.get("sanitise", 0.0),
        "locked-cell hashes from the gradebook": acc.get("locked_hashes", 0.0),
        "kernel: launch, interpreter, imports": k["imports"] - T["launch"],
        "kernel: guards take the reference": k["guards"] - k["imports"],
        "kernel: mounts, working copy": k["mounts"] - k["guards"],
        "kernel: own network namespace": k["network"] - k["mounts"],
        "kernel: ipykernel sockets + shell, uid, limits": k["initialized"] - k["network"],
        "kernel: until the grader sees it ready": T["ready"] - k["initialized"],
        "the notebook's cells (its own work, guards between cells)": acc.get("cells", 0.0),
        "kernel stop": acc.get("kernel_stop", 0.0),
        "uid sweep (kill_uid)": acc.get("kill_uid", 0.0),
        "feedback-side work: ClearMetadata, LimitOutput, SaveAutoGrades, late penalties":
            sum(v for n, v in acc.items() if n.startswith("after:")),
        "writing the notebooks": acc.get("write", 0.0),
    }
    inside = T["end"] - T["run"] - sum(list(phases.values())[2:])
    phases["other nbgrader work (config, file copies, logging)"] = inside
    phases["exit, namespace teardown"] = wall - T["end"]
    # the grading's own CPU: the process (a fork's usage starts at its fork) and its children (the kernel)
    return {"load": round(load, 1), "wall": wall, "cpu": cpu, "phases": phases,
            "cpu_grading": d["cpu_self"] + d["cpu_children"]}


def breakdown(week: str, repeats: int, student: str = "ada", modes: tuple[str, ...] = ("process", "fork")) -> dict:
    """Medians over ``repeats`` instrumented gradings of one submission, per process and per worker fork."""
    import statistics


    out = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None) as tmp:
        root = _course(Path(tmp), week)
        for fork in [m == "fork" for m in modes]:
            runs = [breakdown_once(root, week, student, fork) for _ in range(repeats)]
            out["worker fork" if fork else "process"] = {
                "loads": [r["load"] for r in runs],
                "wall": statistics.median(r["wall"] for r in runs),
                "cpu": statistics.median(r["cpu"] for r in runs),
                "cpu_grading": statistics.median(r["cpu_grading"] for r in runs),
                "phases": {n: statistics.median(r["phases"][n] for r in runs) for n in runs[0]["phases"]}}
    return out


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
    p.add_argument("--repeats", type=int, default=3, help="repeats of the one-submission measurements (medians)")
    p.add_argument("--breakdown", metavar="JSON", help="where one submission's grading time goes (instrumented, "
                   "--repeats times, per process and per worker fork): write JSON, print a table, and stop")
    p.add_argument("--modes", nargs="+", default=["process", "fork"], choices=["process", "fork"],
                   help="with --breakdown: a new process per submission (plain nbgrader), a worker's fork, or both")
    p.add_argument("--single", metavar="JSON", help="nbconvert --execute vs sparkcourse grade of ada's notebook "
                   "alone, --repeats times: write JSON, print a table, and stop")
    args = p.parse_args(argv)
    if args.breakdown:
        got = breakdown(args.week, args.repeats, modes=tuple(args.modes))
        Path(args.breakdown).write_text(json.dumps(got, indent=1))
        cols = list(got)
        print(f"| phase | {' | '.join(cols)} |\n|---|{'---|' * len(cols)}")
        for i, n in enumerate(got[cols[0]]["phases"]):
            print(f"| {n} | {' | '.join(format(list(got[c]['phases'].values())[i], '.2f') for c in cols)} |")
        for key in ("wall", "cpu", "cpu_grading"):
            print(f"| total {key} | {' | '.join(f'{got[c][key]:.1f}' for c in cols)} |")
        print(f"| load (1 min) at each repeat | {' | '.join(str(got[c]['loads']) for c in cols)} |")
        return 0
    if args.single:
        import statistics

        rows = plain_seconds(args.week, repeats=args.repeats)
        Path(args.single).write_text(json.dumps(rows, indent=1))
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k not in ("load", "load_graded")}
        print(json.dumps(rows, indent=1))
        print(f"medians: {json.dumps({k: round(v, 1) for k, v in med.items()})}")
        return 0
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
    (row,) = plain_seconds(args.week)
    plain, graded = row["nbconvert"], row["submission"]
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
        f"| `sparkcourse grade` of ada's notebook alone (the submission's time in it) | {graded:.1f} |",
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
