"""Week 01's visible tests on the GPU path vs in the CUDA simulator, for every sample-class student.

    python benchmarks/cuda_numba_visible.py --out benchmarks/cuda_numba_visible_<card>.md   # on a CUDA GPU
    python benchmarks/cuda_numba_visible.py --sim-only --out /tmp/visible.md             # no GPU: simulator only

For the reference solution and each student of ``sample_class/01-cuda-numba/``, two child processes replay the
notebook the way a student runs it: the set-up cell, each answer cell (the student's, else the release stub), and
each test cell *without its hidden part*. One child runs with profile ``spark`` on the GPU (``launch`` runs the
kernel on the GPU and traces it in a simulator grandchild), the other with profile ``tiny`` in the simulator
(what grading sees). The table says, per student and test cell, pass/fail on each path and whether they agree;
the exit status is 1 when a visible test passes on the GPU path but fails in the simulator.
Needs the course package and numba/torch, not nbgrader. Takes a few minutes (children run in parallel).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEEK = "01-cuda-numba"
REFERENCE = "(reference)"


def _cells(student: str) -> list[tuple[str, str, str]]:
    """(kind, grade id, source) of the cells a student's notebook would run: set-up, answers, visible tests."""
    from sparkcourse.grader.authoring import NOTEBOOK_KINDS, read_answers, split_blocks, strip_hidden

    blocks = split_blocks((ROOT / "authoring" / f"{WEEK}.py").read_text(), NOTEBOOK_KINDS, default_kind="code")
    answers = {} if student == REFERENCE else read_answers(ROOT / "sample_class" / WEEK / f"{student}.py")
    out = []
    for b in blocks:
        gid = b.opts.get("id", "")
        if b.kind == "setup":
            out.append(("setup", gid, b.text))
        elif b.kind == "solution":
            lines, inside, stub = [], False, []
            for line in b.text.splitlines():
                if line.strip() == "### BEGIN SOLUTION":
                    inside = True
                    stub.append(line[: len(line) - len(line.lstrip())] + "raise NotImplementedError()")
                elif line.strip() == "### END SOLUTION":
                    inside = False
                else:
                    lines.append(line)
                    if not inside:
                        stub.append(line)
            if student == REFERENCE:
                source = "\n".join(lines)
            else:
                source = answers.get(gid, "\n".join(stub))
            out.append(("answer", gid, source))
        elif b.kind == "tests":
            out.append(("tests", gid, strip_hidden(b.text)))
    return out


def child(student: str) -> dict[str, str]:
    """Run one student's cells in this process (profile and simulator set by the parent); test id -> verdict."""
    import contextlib
    import io

    scope: dict = {"__name__": "__main__"}
    verdicts: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="w01-visible-"))
    for k, (kind, gid, source) in enumerate(_cells(student)):
        path = tmp / f"cell{k:02d}_{gid or kind}.py"  # a real file, so inspect.getsource finds each kernel
        path.write_text(source + "\n")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source + "\n", str(path), "exec"), scope)
            if kind == "tests":
                verdicts[gid] = "pass"
        except BaseException as exc:  # a failing cell is a verdict, not a crash
            if isinstance(exc, KeyboardInterrupt):
                raise
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if kind == "tests":
                verdicts[gid] = "fail: " + message[:160]
            elif kind == "setup":
                return {"setup": "fail: " + message + "\n" + traceback.format_exc()[-2000:]}
    return verdicts


def _run_child(student: str, mode: str, timeout: float) -> tuple[str, str, dict[str, str], float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               MPLBACKEND="Agg")
    env["SPARKCOURSE_PROFILE"] = "spark" if mode == "gpu" else "tiny"
    env["NUMBA_ENABLE_CUDASIM"] = "0" if mode == "gpu" else "1"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", student], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"child": f"fail: exit {proc.returncode}: {proc.stderr[-500:]}"}
    except subprocess.TimeoutExpired:
        result = {"child": f"fail: more than {timeout:.0f} s"}
    return student, mode, result, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write")
    parser.add_argument("--sim-only", action="store_true", help="no GPU: run the simulator column only")
    parser.add_argument("--timeout", type=float, default=280.0, help="seconds per child process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0

    students = [REFERENCE] + sorted(p.stem for p in (ROOT / "sample_class" / WEEK).glob("*.py"))
    modes = ["sim"] if args.sim_only else ["gpu", "sim"]
    t0 = time.perf_counter()
    results: dict[tuple[str, str], dict[str, str]] = {}
    seconds: dict[tuple[str, str], float] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        jobs = [pool.submit(_run_child, s, m, args.timeout) for s in students for m in modes]
        for job in concurrent.futures.as_completed(jobs):
            student, mode, result, secs = job.result()
            results[student, mode], seconds[student, mode] = result, secs
    card = "CUDA simulator only (--sim-only)"
    if not args.sim_only:
        import torch

        card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU found"
    lines = [f"# Week 01 visible tests: GPU path vs CUDA simulator ({card})", "",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
             f"- command: `python benchmarks/cuda_numba_visible.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- host: {platform.machine()}, Python {platform.python_version()}, wall time "
             f"{time.perf_counter() - t0:.0f} s",
             "- GPU path: profile `spark`, kernels on the GPU, access patterns traced in a simulator child process; "
             "simulator: profile `tiny` (what grading runs). Hidden tests are not run.", "",
             "| student | test cell | GPU path | simulator | same verdict |", "|---|---|---|---|---|"]
    order = [gid for kind, gid, _ in _cells(REFERENCE) if kind == "tests"]
    disagreements = stricter = 0
    for student in students:
        seen = {k for m in modes for k in results[student, m]}
        ids = [g for g in order if g in seen] + sorted(seen - set(order))
        for gid in ids:
            got = {m: results[student, m].get(gid, "not run") for m in modes}
            gpu_v = got.get("gpu", "(not run)")
            gpu_ok, sim_ok = gpu_v == "pass", got["sim"] == "pass"
            if args.sim_only:
                same = "n/a"
            elif gpu_ok == sim_ok:
                same = "yes"
            elif gpu_ok:  # what must not happen: told "passed" on the GPU, failed by the grader's simulator
                same = "**NO: passes on the GPU only**"
                disagreements += 1
            else:  # the hardware is stricter (a real race losing updates): worth knowing, not a false pass
                same = "no: fails on the GPU only"
                stricter += 1
            lines.append(f"| {student} | {gid} | {gpu_v.replace('|', '/')} | {got['sim'].replace('|', '/')} | {same} |")
    lines += ["", f"Passes on the GPU path but fails in the simulator: {disagreements}. Fails on the GPU only: "
              f"{stricter}. Child wall times (s): "
              + ", ".join(f"{s}/{m} {seconds[s, m]:.0f}" for s in students for m in modes)]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
