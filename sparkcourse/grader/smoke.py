"""``sparkcourse smoke``: run every ready week's ``authoring/NN-topic.py`` top to bottom as a plain script.

One subprocess per week, in a fresh temporary directory, with ``SPARKCOURSE_PROFILE`` set, the stand-in mode on
(``SPARKCOURSE_STANDIN=1``) unless asked otherwise, ``MPLBACKEND=Agg`` and no ``NBGRADER_EXECUTION`` (the spark
cells run). Per week: pass/fail (the exit status), wall time, peak GPU memory, the number of ``SKIPPED:`` lines and
the last error line; ``--out FILE.md`` writes them as a table with the card, driver and versions.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sparkcourse.grader.smoke_run import MARKER

DEFAULT_TIMEOUT = 600
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?$")  # a traceback's last line


@dataclass
class WeekRun:
    """One week's smoke run."""

    week: str
    ok: bool
    returncode: int | None  # None: timed out
    seconds: float
    peak_gpu_bytes: int | None  # None: CUDA was never used (or not available)
    skipped: int
    last_error: str
    log: Path


def child_env(profile: str, standin: bool, root: Path) -> dict[str, str]:
    """The environment of a week's subprocess (this one's, less nbgrader's flag, plus the smoke settings)."""
    env = {k: v for k, v in os.environ.items() if k != "NBGRADER_EXECUTION"}
    env.update(SPARKCOURSE_PROFILE=profile, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if standin:
        env["SPARKCOURSE_STANDIN"] = "1"
    else:
        env.pop("SPARKCOURSE_STANDIN", None)
    if (root / "sparkcourse" / "__init__.py").exists():  # the course's own package first
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def parse_log(text: str) -> tuple[int, str, int | None]:
    """``(SKIPPED lines, last error line, peak GPU bytes)`` of a week's output."""
    lines = [line.rstrip() for line in text.splitlines()]
    skipped = sum(line.lstrip().startswith("SKIPPED:") for line in lines)
    peak = None
    for line in lines:
        if line.startswith(MARKER):
            try:
                peak = json.loads(line[len(MARKER):]).get("peak_bytes")
            except json.JSONDecodeError:
                pass
    body = [line for line in lines if line.strip() and not line.startswith(MARKER)]
    errors = [line.strip() for line in body if _ERROR_LINE.match(line.strip())]
    return skipped, (errors[-1] if errors else ""), peak


def run_week(root: Path, week: str, profile: str = "tiny", standin: bool = True, timeout: float = DEFAULT_TIMEOUT,
             log_dir: Path | None = None) -> WeekRun:
    """Run ``authoring/<week>.py`` as a script in a temporary directory and report how it went."""
    root = root.resolve()  # the child runs elsewhere: paths must not be relative
    script = root / "authoring" / f"{week}.py"
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="sparkcourse-smoke-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{week}.log"
    cwd = Path(tempfile.mkdtemp(prefix=f"smoke-{week}-"))
    cmd = [sys.executable, "-m", "sparkcourse.grader.smoke_run", str(script)]
    t0 = time.perf_counter()
    try:
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(profile, standin, root), stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                returncode: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
                _stop(proc)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    seconds = time.perf_counter() - t0
    skipped, last_error, peak = parse_log(log.read_text(errors="replace"))
    if returncode is None:
        last_error = f"timed out after {timeout:g} s" + (f" (last error: {last_error})" if last_error else "")
    elif returncode != 0 and not last_error:
        last_error = f"exit status {returncode}"
    return WeekRun(week, returncode == 0, returncode, seconds, peak, skipped, last_error, log)


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """Interrupt a week's process group (the runner still prints its GPU peak and the traceback), then kill it."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)  # the whole group: data loader workers too
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def smoke(root: Path, week_ids: list[str], profile: str = "tiny", standin: bool = True,
          timeout: float = DEFAULT_TIMEOUT, log_dir: Path | None = None, echo: bool = True) -> list[WeekRun]:
    """Run each week in turn; print one line per week as it finishes."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="sparkcourse-smoke-"))
    runs = []
    for week in week_ids:
        run = run_week(root, week, profile, standin, timeout, log_dir)
        runs.append(run)
        if echo:
            print(row_text(run), flush=True)
    if echo:
        print(f"smoke: {sum(r.ok for r in runs)} of {len(runs)} weeks passed; logs in {log_dir}")
    return runs


def _gb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e9:.2f} GB"


def row_text(run: WeekRun) -> str:
    """One printed line per week."""
    line = (f"  {'ok  ' if run.ok else 'FAIL'} {run.week:22s} {run.seconds:7.1f} s  peak GPU {_gb(run.peak_gpu_bytes):>8s}"
            f"  SKIPPED {run.skipped}")
    return line + (f"\n       {run.last_error[:300]}" if run.last_error else "")


def environment(command: str) -> dict[str, str]:
    """Card, driver, torch/CUDA and numba-cuda versions, date and command, for the report's header."""
    import torch

    from sparkcourse import gpu

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no CUDA GPU (CPU: {gpu.cpu_model()})"
    driver = "no nvidia-smi"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            driver = "unknown"
    return {
        "card": card,
        "driver": driver,
        "torch": torch.__version__,
        "CUDA": torch.version.cuda or "none (CPU build)",
        "numba-cuda": version("numba-cuda"),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
    }


def markdown(runs: list[WeekRun], env: dict[str, str], profile: str, standin: bool) -> str:
    """The report: a header of facts and one table row per week."""
    head = [f"# sparkcourse smoke: {sum(r.ok for r in runs)} of {len(runs)} weeks passed", ""]
    head += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in env.items()]
    head += [f"- profile: {profile}; stand-in mode: {'on' if standin else 'off'}", ""]
    rows = ["| week | result | wall s | peak GPU memory | SKIPPED lines | last error |", "|---|---|---|---|---|---|"]
    for r in runs:
        err = r.last_error.replace("|", "\\|")[:200]
        rows.append(f"| `{r.week}` | {'pass' if r.ok else '**fail**'} | {r.seconds:.1f} | {_gb(r.peak_gpu_bytes)} "
                    f"| {r.skipped} | {err} |")
    return "\n".join(head + rows) + "\n"


def run_smoke(root: Path, weeks_wanted: list[str], profile: str | None, standin: bool, timeout: float,
              out: Path | None, log_dir: Path | None, command: str = "sparkcourse smoke") -> int:
    """The CLI command: 0 when every week ran to the end."""
    from sparkcourse import profile as profiles
    from sparkcourse import weeks

    registry = weeks.registry_for(root)
    ids = [weeks.get(w, registry).id for w in weeks_wanted] or [w.id for w in weeks.ready(registry)]
    profile = profile or profiles.current().name
    print(f"smoke: {len(ids)} weeks, profile {profile}, stand-in {'on' if standin else 'off'}, "
          f"timeout {timeout:g} s each")
    runs = smoke(root, ids, profile, standin, timeout, log_dir)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(runs, environment(command), profile, standin))
        print(f"report: {out}")
    return 0 if all(r.ok for r in runs) else 1
