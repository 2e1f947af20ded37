"""Course operations over nbgrader: build the release, grade a class, feedback, the grade table, the bundle.

Each step calls nbgrader's own commands (one process per assignment or submission), so a broken
submission costs only itself: its failure is recorded and the class run carries on.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

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


_RUNNING: set[subprocess.Popen] = set()  # nbgrader processes in flight (killed if grading is interrupted)


def nbgrader(root: Path, *args: str, timeout: float | None = None, prefix: tuple[str, ...] = (),
             env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m nbgrader ARGS`` in the course root, in its own process group, with a time limit.

    ``prefix`` wraps the command (``sandbox.isolation_prefix()``: its own network and PID namespaces)."""
    # nbgrader runs `alembic` and `jupyter` from PATH: put this interpreter's scripts first, venv activated or not.
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=scripts + os.pathsep + os.environ.get("PATH", ""),
               **(env_extra or {}))
    env.pop("NBGRADER_EXECUTION", None)
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


def _autograde_one(root: Path, a: str, s: str, timeout: float, prefix: tuple[str, ...]) -> StepResult:
    problem = check_submission(root, a, s)
    if problem:
        return StepResult(a, s, False, 0.0, problem)
    # the outer limit is a backstop: the sandboxed executor stops at `timeout` and still records the grades
    proc, secs = _timed(lambda: nbgrader(root, "autograde", a, "--student", s, "--force", timeout=timeout + 180,
                                         prefix=prefix, env_extra={"SPARKCOURSE_NOTEBOOK_TIMEOUT": str(int(timeout))}))
    errors = _nbgrader_errors(proc.stdout)
    notes = sorted({ln.split("] ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("[sparkcourse.grading.sandbox]")})
    restarts = [ln for ln in proc.stdout.splitlines() if "sandbox: cell" in ln]
    # nbgrader logs ERROR for every cell that timed out; what counts is whether the graded notebook was written
    ok = (proc.returncode == 0 and "error processing assignment" not in proc.stdout
          and (root / "autograded" / s / a / f"{a}.ipynb").exists())
    message = "" if ok else ("\n".join(errors) or proc.stdout[-2000:])
    if restarts:
        message = "\n".join([*(r.split("sandbox: ", 1)[1] for r in restarts), message]).strip()
    return StepResult(a, s, ok, secs, message, sandbox="; ".join(notes))


def grade(root: Path, only: list[str] | None = None, progress: bool = True,
          timeout: float = NOTEBOOK_TIMEOUT, workers: int | None = None, resume: bool = False,
          students: list[str] | None = None) -> list[StepResult]:
    """``nbgrader autograde`` every submitted student, ``workers`` at a time (default: one per core).

    Each submission runs in its own sandboxed nbgrader process (``sparkcourse.grading.sandbox``); a broken submission is
    reported and the class carries on. ``resume`` skips submissions graded after they were last changed.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from sparkcourse.grading.sandbox import isolation_prefix

    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(a, s) for a in only or assignments(root) for s in submitted_students(root, a)
            if students is None or s in students]
    results: list[StepResult] = []
    if resume:
        skipped = [(a, s) for a, s in jobs if graded_already(root, a, s)]
        results += [StepResult(a, s, True, 0.0, "already graded (resume)") for a, s in skipped]
        jobs = [j for j in jobs if j not in set(skipped)]
    prefix, how = isolation_prefix()
    _gradebook_wal(root)
    bar = tqdm(total=len(jobs), desc=f"grading ({workers} workers)", unit="submission", disable=not progress,
               file=sys.stdout)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(_autograde_one, root, a, s, timeout, prefix): (a, s) for a, s in jobs}
        for fut in as_completed(futures):
            a, s = futures[fut]
            try:
                results.append(fut.result())
            except Exception as exc:  # the grader itself failed on this one: report it, carry on
                results.append(StepResult(a, s, False, 0.0, f"{type(exc).__name__}: {exc}"))
            bar.set_postfix_str(f"{a}/{s}")
            bar.update()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(_RUNNING):
            _killpg(proc)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        order = {j: i for i, j in enumerate((a, s) for a in only or assignments(root)
                                            for s in submitted_students(root, a))}
        results.sort(key=lambda r: order.get((r.assignment, r.student), 0))
        write_log(root, "grade", results, isolation=how, workers=workers)
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
    """Scores of every student in every assignment (None: not graded)."""

    assignments: list[str]
    max_scores: dict[str, float]
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        """Header plus one row per student, scores as 'x' strings."""
        head = ["student", *self.assignments, "total"]
        out = [head]
        for student, row in sorted(self.scores.items()):
            vals = [row.get(a) for a in self.assignments]
            total = sum(v for v in vals if v is not None)
            out.append([student, *("" if v is None else f"{v:g}" for v in vals), f"{total:g}"])
        out.append(["(max)", *(f"{self.max_scores[a]:g}" for a in self.assignments),
                    f"{sum(self.max_scores.values()):g}"])
        return out


def grade_table(root: Path) -> GradeTable:
    """Read the gradebook: each autograded student's score per assignment."""
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


BUNDLE_EXCLUDE = ("reference", "__pycache__")


def bundle(root: Path, out: Path | None = None) -> Path:
    """Zip what students receive: release notebooks and the package without ``sparkcourse.reference``."""
    out = out or root / "dist" / "sparkcourse-student.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((root / "release").rglob("*")):
            if path.is_file() and ".ipynb_checkpoints" not in path.parts:
                zf.write(path, path.relative_to(root))
        for path in sorted((root / "sparkcourse").rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(part in BUNDLE_EXCLUDE for part in rel.parts) and path.suffix != ".pyc":
                zf.write(path, rel)
        for name in ("pyproject.toml", "README.md", "environment.yml"):
            if (root / name).exists():
                zf.write(root / name, name)
    return out


# ---- the sample class -------------------------------------------------------------------------------

def _answers(path: Path) -> dict[str, str]:
    """Answer cells of a sample student: ``# %% answer id=GRADE_ID`` blocks."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("# %% answer id="):
            current = line.split("=", 1)[1].strip()
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in blocks.items()}


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
                answers = _answers(root / "sample_class" / a / f"{student}.py") if kind == "answers" else {}
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
