"""Course operations over nbgrader: build the release, grade a class, feedback, the grade table, the bundle.

Each step calls nbgrader's own commands (one process per assignment or submission), so a broken
submission costs only itself: its failure is recorded and the class run carries on.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat

if TYPE_CHECKING:
    from sparkcourse.grader.worker import WorkerPool

from sparkcourse.grader.authoring import read_answers

NOTEBOOK_TIMEOUT = int(os.environ.get("SPARKCOURSE_NOTEBOOK_TIMEOUT", "300"))


def find_root(start: Path | None = None) -> Path:
    """The course root: the nearest folder (upwards) holding ``nbgrader_config.py`` and ``source/``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").exists() and (folder / "source").is_dir():
            return folder
    raise FileNotFoundError(f"no course root (nbgrader_config.py + source/) at or above {here}")


def assignments(root: Path) -> list[str]:
    """Assignment ids, ``NN-topic``, in course order."""
    return sorted(p.name for p in (root / "source").iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").exists())


@dataclass
class StepResult:
    """The outcome of one nbgrader call."""

    assignment: str
    student: str | None
    ok: bool
    seconds: float
    message: str = ""
    sandbox: str = ""  # what the grading kernel could isolate on this machine (from its log)
    flags: str = ""  # what the TA should look at: submitted nbgrader metadata that was reset (grader.metadata)


_RUNNING: set[subprocess.Popen] = set()  # nbgrader processes in flight (killed if grading is interrupted)


def nbgrader(root: Path, *args: str, timeout: float | None = None, prefix: tuple[str, ...] = (),
             env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m nbgrader ARGS`` in the course root, in its own process group, with a time limit.

    ``prefix`` wraps the command (``sandbox.isolation_prefix()``: its own network and PID namespaces)."""
    env = _nbgrader_env(env_extra)
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc)
        out, _ = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, (out or "") + f"\n[sparkcourse] timed out after {timeout} s")
    finally:
        _RUNNING.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def _nbgrader_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment nbgrader runs in: this interpreter's scripts first on PATH (nbgrader runs `alembic` and
    `jupyter` from it, venv activated or not), unbuffered output, no NBGRADER_EXECUTION of ours."""
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=scripts + os.pathsep + os.environ.get("PATH", ""),
               **(env_extra or {}))
    env.pop("NBGRADER_EXECUTION", None)
    return env


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _timed(fn):
    import time

    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def _nbgrader_errors(out: str) -> list[str]:
    """nbgrader's error lines with the traceback before them (it exits 0 on many failures)."""
    lines = out.splitlines()
    first = next((i for i, line in enumerate(lines) if "| ERROR]" in line or line.startswith("Traceback")), None)
    return [] if first is None else lines[first:][-40:]


def build(root: Path, only: list[str] | None = None) -> list[StepResult]:
    """``nbgrader generate_assignment`` for every assignment in source/ into release/."""
    results = []
    for a in only or assignments(root):
        proc, secs = _timed(lambda a=a: nbgrader(root, "generate_assignment", a, "--force", "--create"))
        errors = _nbgrader_errors(proc.stdout)
        ok = proc.returncode == 0 and not errors
        results.append(StepResult(a, None, ok, secs, "" if ok else ("\n".join(errors) or proc.stdout[-2000:])))
    return results


def submitted_students(root: Path, assignment: str) -> list[str]:
    """Students with a submission folder for ``assignment``."""
    sub = root / "submitted"
    if not sub.is_dir():
        return []
    return sorted(p.name for p in sub.iterdir() if (p / assignment).is_dir())


def check_submission(root: Path, assignment: str, student: str) -> str | None:
    """Why a submission cannot be graded (missing or unreadable notebook), or None if it looks gradable."""
    nb_path = root / "submitted" / student / assignment / f"{assignment}.ipynb"
    if not nb_path.exists():
        return f"missing {assignment}.ipynb"
    try:
        nbformat.read(nb_path, as_version=4)
    except Exception as exc:  # nbformat raises several types for broken JSON and schema errors
        return f"malformed notebook: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def _gradebook_wal(root: Path) -> None:
    """Switch the gradebook to WAL (persistent): parallel graders' reads never block a writer's commit."""
    import sqlite3

    db = root / "gradebook.db"
    if db.exists():
        with sqlite3.connect(db, timeout=60) as con:
            con.execute("PRAGMA journal_mode=WAL")


def graded_already(root: Path, assignment: str, student: str) -> bool:
    """True if the autograded notebook is newer than the submission and the gradebook has its score."""
    from nbgrader.api import Gradebook, MissingEntry

    done = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    sub = root / "submitted" / student / assignment
    if not done.exists() or not sub.is_dir():
        return False
    newest = max((p.stat().st_mtime for p in sub.rglob("*") if p.is_file()), default=0.0)
    if done.stat().st_mtime < newest:
        return False
    try:
        with Gradebook("sqlite:///" + str(root / "gradebook.db")) as gb:
            return gb.find_submission(assignment, student).score is not None
    except MissingEntry:
        return False


def _autograde_run(root: Path, a: str, s: str, timeout: float, prefix: tuple[str, ...],
                   pool: WorkerPool | None) -> subprocess.CompletedProcess:
    """``nbgrader autograde A --student S --force`` in its own namespaces: forked from a grading worker (``pool``,
    ``sparkcourse.grader.worker``), or as a new process behind ``prefix`` (no pool, or the pool could not)."""
    args = ["autograde", a, "--student", s, "--force"]
    extra = {"SPARKCOURSE_NOTEBOOK_TIMEOUT": str(int(timeout))}
    # the outer limit is a backstop: the sandboxed executor stops at `timeout` and still records the grades
    if pool is not None:
        try:
            reply = pool.run(args, root, timeout + 180, extra)
        except RuntimeError:  # no worker (a platform without fork or /proc), or it died: a process, as before
            reply = {"refused": True}
        if not reply.get("refused"):
            return subprocess.CompletedProcess(["nbgrader", *args], reply["rc"], reply["out"])
    return nbgrader(root, *args, timeout=timeout + 180, prefix=prefix, env_extra=extra)


def _autograde_one(root: Path, a: str, s: str, timeout: float, prefix: tuple[str, ...],
                   pool: WorkerPool | None = None) -> StepResult:
    problem = check_submission(root, a, s)
    if problem:
        return StepResult(a, s, False, 0.0, problem)
    proc, secs = _timed(lambda: _autograde_run(root, a, s, timeout, prefix, pool))
    errors = _nbgrader_errors(proc.stdout)
    notes = sorted({ln.split("] ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("[sparkcourse.grader.sandbox]")})
    restarts = [ln for ln in proc.stdout.splitlines() if "sandbox: cell" in ln]
    # nbgrader logs ERROR for every cell that timed out; what counts is whether the graded notebook was written
    ok = (proc.returncode == 0 and "error processing assignment" not in proc.stdout
          and (root / "autograded" / s / a / f"{a}.ipynb").exists())
    message = "" if ok else ("\n".join(errors) or proc.stdout[-2000:])
    if restarts:
        message = "\n".join([*(r.split("sandbox: ", 1)[1] for r in restarts), message]).strip()
    flags = [ln.split("] ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("[sparkcourse.grader.flag]")]
    return StepResult(a, s, ok, secs, message, sandbox="; ".join(notes), flags="; ".join(flags))


class GradingRefused(RuntimeError):
    """The grading environment cannot grade the reference solution to full marks: nothing was graded."""


REFERENCE_STUDENT = "reference"  # the student id the source notebook is graded under in the pre-flight course


def _fingerprint(root: Path, assignment: str) -> str:
    """What a pre-flight result depends on: the source notebook, the config, the package and the interpreter."""
    import hashlib

    h = hashlib.sha256(sys.executable.encode())
    pkg = Path(__file__).resolve().parents[1]
    for path in [root / "source" / assignment / f"{assignment}.ipynb", root / "nbgrader_config.py",
                 *sorted(pkg.rglob("*.py"))]:
        h.update(str(path.name).encode() + (path.read_bytes() if path.exists() else b""))
    return h.hexdigest()[:16]


def cell_scores(root: Path, assignment: str, student: str) -> dict[str, tuple[float, float]]:
    """grade_id -> (score, max) of one graded submission, from the course's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(root / "gradebook.db")) as gb:
        sub = gb.find_submission(assignment, student)
        return {g.name: (g.score, g.max_score) for nb in sub.notebooks for g in nb.grades}


def _preflight_one(root: Path, a: str, timeout: float, prefix: tuple[str, ...],
                   pool: WorkerPool | None = None) -> dict:
    """Grade the source notebook through the same sandbox in a scratch course (``.preflight/A``)."""
    import sqlite3

    scratch = root / ".preflight" / a
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "source").mkdir(parents=True)
    shutil.copy2(root / "nbgrader_config.py", scratch / "nbgrader_config.py")
    shutil.copytree(root / "source" / a, scratch / "source" / a)
    shutil.copytree(root / "release" / a, scratch / "release" / a)
    sub = scratch / "submitted" / REFERENCE_STUDENT / a
    sub.mkdir(parents=True)
    shutil.copy2(root / "source" / a / f"{a}.ipynb", sub / f"{a}.ipynb")
    with sqlite3.connect(root / "gradebook.db", timeout=60) as src, sqlite3.connect(scratch / "gradebook.db") as dst:
        src.backup(dst)
    try:
        r = _autograde_one(scratch, a, REFERENCE_STUDENT, timeout, prefix, pool)
        scores = cell_scores(scratch, a, REFERENCE_STUDENT) if r.ok else {}
        first_error = _first_error(scratch / "autograded" / REFERENCE_STUDENT / a / f"{a}.ipynb")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            scratch.parent.rmdir()  # the last one out removes .preflight/
    failing = sorted(k for k, (got, most) in scores.items() if got != most)
    return {"ok": r.ok and bool(scores) and not failing, "scores": scores, "failing": failing,
            "first_error": first_error, "seconds": round(r.seconds, 1), "message": r.message[-2000:],
            "sandbox": r.sandbox}


def _first_error(path: Path) -> str:
    """``cell ID: Error: message`` of the first cell of a graded notebook that raised, or ''."""
    try:
        cells = nbformat.read(path, as_version=4).cells
    except Exception:
        return ""
    for i, c in enumerate(cells):
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            if o.get("output_type") == "error":
                gid = c.metadata.get("nbgrader", {}).get("grade_id", f"#{i}")
                return f"cell {gid}: {o.get('ename')}: {str(o.get('evalue'))[:300]}"
    return ""


def preflight(root: Path, only: list[str], timeout: float, prefix: tuple[str, ...], workers: int,
              pool: WorkerPool | None = None) -> dict:
    """Grade each assignment's reference solution once (cached by fingerprint); raise GradingRefused unless every
    one scores full marks. Writes reports/preflight.json."""
    from concurrent.futures import ThreadPoolExecutor

    log_file = root / "reports" / "preflight.json"
    log = json.loads(log_file.read_text()) if log_file.exists() else {}
    todo = [a for a in only if not (log.get(a, {}).get("ok") and log[a].get("fingerprint") == _fingerprint(root, a))]
    with ThreadPoolExecutor(max_workers=workers) as threads:
        for a, res in zip(todo, threads.map(lambda a: _preflight_one(root, a, timeout, prefix, pool), todo),
                          strict=True):
            log[a] = {**res, "fingerprint": _fingerprint(root, a)}
    log_file.parent.mkdir(exist_ok=True)
    log_file.write_text(json.dumps(log, indent=1))
    bad = [a for a in only if not log[a]["ok"]]
    if bad:
        why = "; ".join(f"{a}: " + (log[a]["first_error"] or ", ".join(log[a]["failing"])
                                    or failure_cause(log[a]["message"]))
                        for a in bad)
        raise GradingRefused(f"the reference solution does not score full marks in this grading environment "
                             f"({why}); nothing was graded — see reports/preflight.json")
    return log


_EXCEPTION_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Refused|Entry): .+")


def failure_cause(log: str) -> str:
    """The most specific line of a failed nbgrader run: its last exception line (``NbGraderException: No
    assignment with ID … exists in the database``), else its last line — not "see the above traceback"."""
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    causes = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return ((causes or lines or ["not graded"])[-1])[:200]


def setup_failed(root: Path, assignment: str, student: str) -> bool:
    """True if a read-only set-up cell of the autograded notebook raised an error."""
    path = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    try:
        cells = nbformat.read(path, as_version=4).cells
    except Exception:  # no graded notebook: not a set-up failure
        return False
    for c in cells:
        meta = c.metadata.get("nbgrader", {})
        if c.cell_type == "code" and meta.get("locked") and not meta.get("grade") and not meta.get("solution"):
            if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                return True
    return False


def environment_failures(root: Path, results: list[StepResult]) -> list[str]:
    """Assignments where most graded submissions (at least two) failed a set-up cell: the environment, not the
    students, is broken."""
    out = []
    for a in dict.fromkeys(r.assignment for r in results):
        graded = [r.student for r in results if r.assignment == a and r.ok and r.student]
        broken = [s for s in graded if setup_failed(root, a, s)]
        if len(broken) >= 2 and len(broken) * 2 > len(graded):
            out.append(f"{a}: {len(broken)} of {len(graded)} submissions failed the set-up cell")
    return out


def grade(root: Path, only: list[str] | None = None, progress: bool = True,
          timeout: float = NOTEBOOK_TIMEOUT, workers: int | None = None, resume: bool = False,
          students: list[str] | None = None) -> list[StepResult]:
    """``nbgrader autograde`` every submitted student, ``workers`` at a time (default: one per core).

    First the reference solution of each assignment is graded through the same sandbox (:func:`preflight`);
    unless it scores full marks nothing is graded (:class:`GradingRefused`). Each submission then runs in its own
    sandboxed nbgrader process; a broken submission is reported and the class carries on. ``resume`` skips
    submissions graded after they were last changed. A run where most submissions of an assignment fail the
    set-up cell is reported as an environment failure (reports/grade-run.json, ``environment``).
    """
    from sparkcourse.grader.sandbox import isolation_prefix

    workers = max(1, workers or os.cpu_count() or 1)
    names = only or assignments(root)
    jobs = [(a, s) for a in names for s in submitted_students(root, a) if students is None or s in students]
    results: list[StepResult] = []
    if resume:
        skipped = [(a, s) for a, s in jobs if graded_already(root, a, s)]
        results += [StepResult(a, s, True, 0.0, "already graded (resume)") for a, s in skipped]
        jobs = [j for j in jobs if j not in set(skipped)]
    prefix, how = isolation_prefix()
    _gradebook_wal(root)
    try:
        with kernel_threads(workers), _worker_pool(root, workers, prefix, timeout) as pool:
            preflight(root, sorted({a for a, _ in jobs}), timeout, prefix, workers, pool)
            results += _grade_jobs(root, jobs, timeout, prefix, workers, progress, pool)
    finally:
        order = {j: i for i, j in enumerate((a, s) for a in names for s in submitted_students(root, a))}
        results.sort(key=lambda r: order.get((r.assignment, r.student), 0))
        broken = environment_failures(root, results)
        write_log(root, "grade", results, isolation=how, workers=workers, environment=broken)
    for line in broken:
        print(f"ENVIRONMENT FAILURE — {line}: check the grading environment before trusting these grades")
    return results


@contextlib.contextmanager
def kernel_threads(workers: int) -> Iterator[None]:
    """While grading, give each kernel ``cores // workers`` OpenMP threads (torch's intra-op pool), unless
    OMP_NUM_THREADS is set already: with -j N on N cores, every kernel's default of N threads oversubscribes
    the cores, and spinning OpenMP threads then slow torch-heavy notebooks several times over."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def _worker_pool(root: Path, workers: int, prefix: tuple[str, ...], timeout: float
                 ) -> contextlib.AbstractContextManager:
    """Long-lived grading workers, one per slot (``sparkcourse.grader.worker``); none with
    SPARKCOURSE_GRADE_WORKERS=0 (a new nbgrader process per submission, as plain nbgrader does)."""
    from sparkcourse.grader.worker import WorkerPool, mode_of

    if os.environ.get("SPARKCOURSE_GRADE_WORKERS", "1") == "0" or not hasattr(os, "fork"):
        return contextlib.nullcontext(None)
    return WorkerPool(workers, mode_of(prefix), _nbgrader_env({"SPARKCOURSE_NOTEBOOK_TIMEOUT": str(int(timeout))}),
                      cwd=root)


def _grade_jobs(root: Path, jobs: list[tuple[str, str]], timeout: float, prefix: tuple[str, ...], workers: int,
                progress: bool, pool: WorkerPool | None = None) -> list[StepResult]:
    """Grade ``jobs`` on a thread pool with a progress bar; Ctrl-C kills every nbgrader in flight."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    results: list[StepResult] = []
    bar = tqdm(total=len(jobs), desc=f"grading ({workers} workers)", unit="submission", disable=not progress,
               file=sys.stdout)
    executor = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {executor.submit(_autograde_one, root, a, s, timeout, prefix, pool): (a, s) for a, s in jobs}
        for fut in as_completed(futures):
            a, s = futures[fut]
            try:
                results.append(fut.result())
            except Exception as exc:  # the grader itself failed on this one: report it, carry on
                results.append(StepResult(a, s, False, 0.0, f"{type(exc).__name__}: {exc}"))
            bar.set_postfix_str(f"{a}/{s}")
            bar.update()
    except KeyboardInterrupt:
        executor.shutdown(wait=False, cancel_futures=True)
        for proc in list(_RUNNING):
            _killpg(proc)
        if pool is not None:
            pool.close(kill=True)
        raise
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return results


def feedback(root: Path, only: list[str] | None = None) -> list[StepResult]:
    """``nbgrader generate_feedback`` for every graded submission (hidden tests redacted by the config).

    One call per assignment; if it fails, one call per student, so one bad notebook costs only its feedback.
    """
    results = []
    for a in only or assignments(root):
        graded = sorted(p.parent.name for p in (root / "autograded").glob(f"*/{a}") if p.is_dir())
        if not graded:
            continue
        proc, secs = _timed(lambda a=a: nbgrader(root, "generate_feedback", a, "--force"))
        if proc.returncode == 0:
            results.extend(StepResult(a, s, True, secs / len(graded)) for s in graded)
            continue
        for s in graded:
            proc, secs = _timed(lambda a=a, s=s: nbgrader(root, "generate_feedback", a, "--student", s, "--force"))
            ok = proc.returncode == 0
            results.append(StepResult(a, s, ok, secs, "" if ok else proc.stdout[-2000:]))
    write_log(root, "feedback", results)
    return results


def write_log(root: Path, step: str, results: list[StepResult], **about) -> Path:
    """Write the step's results as JSON under reports/ for TAs and tests (``about``: reports/STEP-run.json)."""
    out = root / "reports" / f"{step}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if about:
        (root / "reports" / f"{step}-run.json").write_text(json.dumps(about, indent=1))
    return out


@dataclass
class GradeTable:
    """Scores of every student in every assignment (None: not submitted), with notes for the TA: a submission that
    could not be graded (malformed, missing) scores 0 and says why; a flagged one says what was flagged."""

    assignments: list[str]
    max_scores: dict[str, float]
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        """Header plus one row per student, scores as 'x' strings, and a notes column."""
        head = ["student", *self.assignments, "total", "notes"]
        out = [head]
        for student, row in sorted(self.scores.items()):
            vals = [row.get(a) for a in self.assignments]
            total = sum(v for v in vals if v is not None)
            out.append([student, *("" if v is None else f"{v:g}" for v in vals), f"{total:g}",
                        "; ".join(self.notes.get(student, []))])
        out.append(["(max)", *(f"{self.max_scores[a]:g}" for a in self.assignments),
                    f"{sum(self.max_scores.values()):g}", ""])
        return out


def grade_table(root: Path) -> GradeTable:
    """Read the gradebook, plus reports/grade.json for submissions that could not be graded."""
    from nbgrader.api import Gradebook, MissingEntry

    db_url = "sqlite:///" + str(root / "gradebook.db")
    with Gradebook(db_url) as gb:
        names = [a.name for a in gb.assignments]
        table = GradeTable(names, {a.name: a.max_score for a in gb.assignments})
        for student in gb.students:
            row: dict[str, float | None] = {}
            for a in names:
                try:
                    row[a] = gb.find_submission(a, student.id).score
                except MissingEntry:
                    row[a] = None
            table.scores[student.id] = row
    log = root / "reports" / "grade.json"
    for r in json.loads(log.read_text()) if log.exists() else []:
        if r.get("student") and r["assignment"] in names and (not r["ok"] or r.get("flags")):
            row = table.scores.setdefault(r["student"], dict.fromkeys(names))
            if not r["ok"] and row.get(r["assignment"]) is None:
                row[r["assignment"]] = 0.0
            why = r.get("flags") or (r["message"].strip().splitlines() or ["not graded"])[-1][:160]
            table.notes.setdefault(r["student"], []).append(f"{r['assignment']}: {why}")
    return table


def report(root: Path, show: bool = True) -> GradeTable:
    """Write reports/grades.csv and reports/score_histogram.png; print the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = grade_table(root)
    out = root / "reports"
    out.mkdir(exist_ok=True)
    rows = table.rows()
    with open(out / "grades.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    if show:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    fig, axes = plt.subplots(1, max(1, len(table.assignments)), figsize=(4 * max(1, len(table.assignments)), 3),
                             squeeze=False)
    for ax, a in zip(axes[0], table.assignments, strict=False):
        vals = [row[a] for row in table.scores.values() if row.get(a) is not None]
        ax.hist(vals, bins=10, range=(0, table.max_scores[a] or 1))
        ax.set_title(a)
        ax.set_xlabel(f"score (max {table.max_scores[a]:g})")
        ax.set_ylabel("students")
    fig.tight_layout()
    fig.savefig(out / "score_histogram.png", dpi=80)
    plt.close(fig)
    return table


BUNDLE_EXCLUDE = ("reference", "grader", "__pycache__")  # instructor-only parts of the package
REFERENCED = re.compile(r"(?<![\w/])((?:benchmarks|tools|sparkcourse)/[\w./-]*\w)")


def referenced_files(root: Path, notebooks: list[Path]) -> set[str]:
    """Repository files the notebooks name (``benchmarks/...``, ``tools/...``, ``sparkcourse/...``): a student is
    told to open or run them, so the bundle carries them. Folders expand to their files; names of files a
    command would write (``--out X``) are skipped."""
    out: set[str] = set()
    for nb in notebooks:
        text = nb.read_text()
        written = set(re.findall(r"--out\s+([\w./-]+)", text))
        for ref in set(REFERENCED.findall(text)) - written:
            path = root / ref
            files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else []
            out.update(str(f.relative_to(root)) for f in files if "__pycache__" not in f.parts)
    return out


def bundle(root: Path, out: Path | None = None) -> Path:
    """Zip what students receive: the ready weeks' release notebooks, the package without ``reference/`` and
    ``grader/``, the files the notebooks name (benchmark tables and scripts) and the install files."""
    from sparkcourse import weeks

    out = out or root / "dist" / "sparkcourse-student.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    ready = [w.id for w in weeks.ready(weeks.registry_for(root))]
    release = [p for a in ready for p in sorted((root / "release" / a).rglob("*"))
               if p.is_file() and ".ipynb_checkpoints" not in p.parts]
    names = {str(p.relative_to(root)) for p in release}
    names |= {str(p.relative_to(root)) for p in sorted((root / "sparkcourse").rglob("*"))
              if p.is_file() and p.suffix != ".pyc" and not set(p.relative_to(root).parts) & set(BUNDLE_EXCLUDE)}
    names |= {n for n in referenced_files(root, [p for p in release if p.suffix == ".ipynb"])
              if not set(Path(n).parts) & set(BUNDLE_EXCLUDE)}
    names |= {n for n in ("pyproject.toml", "README.md", "environment.yml", "LICENSE") if (root / n).exists()}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(names):
            zf.write(root / name, name)
    return out


# ---- the sample class -------------------------------------------------------------------------------

def sample_class_spec(root: Path, assignment: str) -> dict:
    """The sample class of one assignment: ``sample_class/NN/expected.toml``."""
    return tomllib.loads((root / "sample_class" / assignment / "expected.toml").read_text())


def make_sample_class(root: Path, only: list[str] | None = None) -> list[tuple[str, str]]:
    """Write submitted/STUDENT/NN/NN.ipynb for each sample student, from the release and their answers."""
    made = []
    for a in only or assignments(root):
        spec_file = root / "sample_class" / a / "expected.toml"
        if not spec_file.exists():
            continue
        release_nb = root / "release" / a / f"{a}.ipynb"
        for student, spec in sample_class_spec(root, a)["students"].items():
            target = root / "submitted" / student / a / f"{a}.ipynb"
            if target.parent.exists():
                shutil.rmtree(target.parent)
            target.parent.mkdir(parents=True)
            kind = spec.get("kind", "answers")
            if kind == "malformed":
                target.write_text(release_nb.read_text()[: len(release_nb.read_text()) // 2])
            else:
                nb = nbformat.read(release_nb, as_version=4)
                answers = read_answers(root / "sample_class" / a / f"{student}.py") if kind == "answers" else {}
                unknown = set(answers) - {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
                if unknown:
                    raise ValueError(f"sample student {student} answers unknown cells {sorted(unknown)} in {a}")
                for cell in nb.cells:
                    gid = cell.metadata.get("nbgrader", {}).get("grade_id")
                    if gid in answers:
                        cell.source = answers[gid]
                nbformat.write(nb, target)
            made.append((a, student))
    return made


# ---- a working copy of the course (benchmarks, tests) ----------------------------------------------------

COPIED_FILES = ("nbgrader_config.py", "authoring", "source", "sample_class")


def copy_course(src_root: Path, dst_root: Path, weeks: list[str] | None = None) -> list[StepResult]:
    """Copy the course at ``src_root`` into ``dst_root``, build the release and write the sample class.

    Copies ``nbgrader_config.py``, ``authoring/``, ``source/`` and ``sample_class/`` (with ``weeks``: only those
    weeks' folders of ``source/`` and ``sample_class/``). Returns the build results; the sample class is written
    only if every build succeeded.
    """
    dst_root.mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        src = src_root / name
        if src.is_file():
            shutil.copy2(src, dst_root / name)
        elif src.is_dir() and (weeks is None or name not in ("source", "sample_class")):
            shutil.copytree(src, dst_root / name)
        elif src.is_dir():
            for week in weeks:
                if (src / week).is_dir():
                    shutil.copytree(src / week, dst_root / name / week)
    results = build(dst_root, weeks)
    if all(r.ok for r in results):
        make_sample_class(dst_root, weeks)
    return results
