"""Hostile submissions: each is graded right (honest parts score, cheating scores 0), the class run completes,
no other student's result changes, nothing leaks into feedback, and the grader's files are untouched.

The battery grades week 00 with two workers and a 30 s cell limit (one class run: 4-8 minutes on 2 shared cores).
A GPU week runs its kernels in numba's CUDA simulator, a thread per GPU thread: ``tests/hostile/01-cuda-numba/``
crashes the kernel from inside a simulated GPU thread, graded next to the honest ada (a minute or two more)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, secret_lines
from test_sandbox import Listener, check_net_probe, host_address, net_probe

from sparkcourse.grader import authoring, course, sandbox

pytestmark = pytest.mark.hostile

A = "00-spark-capacity"
HOSTILE = Path(__file__).parent / "hostile"
CASES = sorted(p.stem for p in HOSTILE.glob("*.py"))
HONEST = {"ada": 17, "bob": 7}  # sample students graded alongside: their scores must not move


def _zero(name: str) -> set[str]:
    first = (HOSTILE / f"{name}.py").read_text().splitlines()[0]
    assert first.startswith("# zero:"), name
    return set(first.split(":", 1)[1].split())


def _tamper(nb) -> None:
    """Edit a locked test, change a cell's type, delete a test, duplicate a grade id, change the kernelspec."""
    cells = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "test_kv_bytes":
            continue
        if gid == "test_audit":
            cell.source = "pass"
        if gid == "test_training":
            cell = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
        cells.append(cell)
    dup = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_bits_per_param")
    cells.append(nbformat.v4.new_code_cell("pass", metadata=json.loads(json.dumps(dup.metadata))))
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "evil", "language": "python"}


def _forge(nb) -> None:
    """Forge nbgrader metadata: a new graded cell, more points for a test, a test turned into an answer."""
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == "test_audit":
            meta["points"] = 100
        if meta.get("grade_id") == "test_training":
            meta.update(locked=False, solution=True)
            cell.source = "pass"
    nb.cells.append(nbformat.v4.new_code_cell("pass", metadata={"nbgrader": {
        "grade": True, "grade_id": "bonus", "points": 100, "locked": False, "solution": False, "schema_version": 3}}))


@dataclass
class Battery:
    root: Path
    results: dict
    scores: dict
    digests: dict
    digests_after: dict


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


request_cleanup: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    for path in request_cleanup:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def battery(tmp_path_factory) -> Battery:
    # Outside /tmp where possible: the kernel gets a private /tmp, which would hide a course under /tmp wholesale
    # and leave the file-hiding mounts (the production case) untested.
    var_tmp = Path("/var/tmp")
    if var_tmp.is_dir() and os.access(var_tmp, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="sparkcourse-hostile-", dir=var_tmp))
        request_cleanup.append(root)
    else:
        root = tmp_path_factory.mktemp("hostile")
    for name in ("nbgrader_config.py", "source", "sample_class"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    with open(root / "nbgrader_config.py", "a") as fh:
        fh.write("\nc.Execute.timeout = 30\nc.SandboxedExecute.memory_mb = 3072\n")
    assert all(r.ok for r in course.build(root, [A]))
    course.make_sample_class(root, [A])
    for s in ("blank", "cyd", "dee"):  # keep the battery short: two honest students are enough witnesses
        shutil.rmtree(root / "submitted" / s)
    release = nbformat.read(root / "release" / A / f"{A}.ipynb", as_version=4)
    honest = authoring.read_answers(ROOT / "sample_class" / A / "ada.py")
    for case in CASES:
        answers = {**honest, **authoring.read_answers(HOSTILE / f"{case}.py")}
        nb = json.loads(json.dumps(release))
        nb = nbformat.from_dict(nb)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                cell.source = answers[gid]
        if case == "tamper":
            _tamper(nb)
        if case == "forged":
            _forge(nb)
        target = root / "submitted" / case / A / f"{A}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
    watched = [root / "submitted" / s / A / f"{A}.ipynb" for s in HONEST] + [
        root / "release" / A / f"{A}.ipynb", root / "nbgrader_config.py", ROOT / "sparkcourse" / "testing.py"]
    digests = {p: _digest(p) for p in watched}
    results = {r.student: r for r in course.grade(root, [A], progress=False, workers=2)}
    course.feedback(root, [A])
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(root / "gradebook.db")) as gb:
        scores = {s: {g.name: (g.score, g.max_score) for nb_ in gb.find_submission(A, s).notebooks
                      for g in nb_.grades} for s in results}
    return Battery(root, results, scores, digests, {p: _digest(p) for p in watched})


def _outputs(b: Battery, student: str) -> str:
    nb = nbformat.read(b.root / "autograded" / student / A / f"{A}.ipynb", as_version=4)
    return "\n".join(str(o.get("text", "")) + str(o.get("evalue", "")) for c in nb.cells for o in c.get("outputs", []))


def test_the_class_run_completes(battery):
    assert set(battery.results) == set(CASES) | set(HONEST)
    bad = {s: r.message[-500:] for s, r in battery.results.items() if not r.ok}
    assert not bad, bad
    assert not [s for s, r in battery.results.items() if "database is locked" in r.message]


@pytest.mark.parametrize("case", CASES)
def test_hostile_submission_is_graded_right(battery, case):
    zero = _zero(case)
    got = battery.scores[case]
    assert zero <= set(got), f"unknown grade ids in {case}: {zero - set(got)}"
    wrong = {g: s for g, s in got.items() if s[0] != (0 if g in zero else s[1])}
    assert not wrong, f"{case}: cells graded wrong (score, max): {wrong}"
    fb = battery.root / "feedback" / case / A / f"{A}.html"
    assert fb.exists(), f"{case}: no feedback written"


@pytest.mark.parametrize("student", sorted(HONEST))
def test_other_students_are_unaffected(battery, student):
    assert sum(s for s, _ in battery.scores[student].values()) == HONEST[student]


def test_grader_files_are_untouched(battery):
    changed = [str(p) for p, d in battery.digests.items() if battery.digests_after[p] != d]
    assert not changed, f"a submission changed {changed}"


def test_forged_metadata_is_reset_and_flagged(battery):
    """Graded on the release's cells and points (17 of 17, not 217); the TA sees what was forged."""
    got = battery.scores["forged"]
    assert "bonus" not in got and got["test_audit"] == (3.0, 3.0) and got["test_training"] == (2.0, 2.0)
    assert sum(s for s, _ in got.values()) == 17
    flags = battery.results["forged"].flags
    assert "bonus" in flags and "test_audit: points" in flags and "test_training" in flags


def _isolated(b: Battery) -> bool:
    return "files isolated" in b.results["snoop"].sandbox


def test_no_network_no_private_files(battery):
    if not sandbox.isolation_prefix()[0] or not _isolated(battery):
        pytest.skip(f"namespaces unavailable here ({sandbox.isolation_prefix()[1]}): see the README's threat model")
    out = _outputs(battery, "snoop")
    assert "NET-BLOCKED" in out and "NET-OPEN" not in out
    assert "READ-BLOCKED" in out and "READ-LEAK" not in out
    assert "WRITE-DONE" not in out and out.count("WRITE-BLOCKED") == 6
    targets = [battery.root / "gradebook.db", battery.root / "nbgrader_config.py",
               battery.root / "release" / A / f"{A}.ipynb", ROOT / "sparkcourse" / "testing.py",
               *(battery.root / d / "ada" / A / f"{A}.ipynb" for d in ("submitted", "autograded"))]
    assert not [str(t) for t in targets if t.exists() and b"pwned" in t.read_bytes()]
    assert re.search(r"FORKED \d+", out), out[-3000:]


def test_huge_output_is_capped(battery):
    path = battery.root / "autograded" / "snoop" / A / f"{A}.ipynb"
    assert path.stat().st_size < 2_000_000
    assert "output truncated" in _outputs(battery, "snoop")


def test_reference_import_is_refused(battery):
    out = _outputs(battery, "refimport")
    assert "BLOCKED-TOP" in out and "IMPORTED-TOP" not in out
    assert "reference solutions are not available" in out


def _attacks(b: Battery, case: str) -> dict[str, str]:
    """What each attack of a case reported (``ATTACK name: outcome`` lines; the last word on each name)."""
    lines = [ln for ln in _outputs(b, case).splitlines() if ln.startswith("ATTACK ")]
    return {ln[7:].split(": ", 1)[0]: ln.split(": ", 1)[1] for ln in lines if ": " in ln[7:]}


def test_reference_objects_cannot_be_stolen(battery):
    """Whatever holds the reference while a test runs (the test's `ref`, sys.modules, the stand-in's __dict__,
    closures, __wrapped__, __globals__, defaults) gives student code nothing; nothing is left for later cells."""
    got = _attacks(battery, "refsteal")
    assert not {k: v for k, v in got.items() if v.startswith("GOT")}, got
    for name in ("test namespace .training_bytes", "sys.modules .training_bytes"):
        assert got.get(name, "").startswith("blocked") and "not available to submissions" in got[name], got
    for name in ("_ref", "ref", "R", "w00_spark_capacity"):
        assert got.get(f"left in the namespace as {name}") == "nothing", got
    assert got.get("sys.modules in a later cell") == "nothing", got


def test_frames_and_hooks_show_no_test(battery):
    """From inside a function a test calls: no frame of the test (sys._getframe, inspect, tracebacks, generators,
    sys._current_frames), no gc, no trace or audit hook; C-level callables steered by the test's own check get
    nothing from the reference either."""
    got = _attacks(battery, "framewalk")
    assert not {k: v for k, v in got.items() if v.startswith("GOT")}, got
    for name in ("sys._getframe", "inspect.currentframe().f_back", "inspect.stack", "traceback", "generator",
                 "sys._current_frames", "gc.get_objects", "gc.get_referrers", "sys.settrace", "audit hook",
                 "refusal traceback"):
        assert got.get(name, "").startswith("blocked"), (name, got)
    assert "training_bytes: the course's reference solutions are not available" in _outputs(battery, "framewalk")


@pytest.mark.parametrize("case", CASES)
def test_feedback_shows_no_hidden_tests(battery, case):
    text = html.unescape(re.sub(r"<[^>]+>", "", (battery.root / "feedback" / case / A / f"{A}.html").read_text()))
    assert "BEGIN HIDDEN TESTS" not in text
    leaked = [line for line in secret_lines(A) if line in text]
    assert not leaked, f"{case}: feedback shows hidden test lines {leaked[:3]}"


def test_crash_is_reported_and_the_rest_graded(battery):
    for case in ("os_exit", "segfault", "sigint_loop"):
        out = _outputs(battery, case)
        assert "kernel died" in out or "did not stop" in out, case


def test_resume_skips_what_is_graded(battery):
    again = course.grade(battery.root, [A], progress=False, workers=2, resume=True)
    assert {r.student for r in again} == set(battery.results)
    assert all(r.ok and "already graded" in r.message for r in again)


def test_plain_autograde_kernel_has_no_network(battery):
    """Plain `nbgrader autograde` (no `sparkcourse grade`, so no namespace around the grader): the kernel still
    reaches nothing of the grader's network, not even its loopback (a server this test starts there counts every
    connection), while a server the submission starts on its own loopback answers."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the kernel makes its own network namespace only as root (see the README's threat model)")
    host = host_address()
    listeners = [Listener("127.0.0.1"), *([Listener(host)] if host else [])]
    student = "netprobe"
    try:
        answers = authoring.read_answers(ROOT / "sample_class" / A / "ada.py")
        answers["training"] = net_probe(listeners, host) + "\n" + answers["training"]
        nb = nbformat.read(battery.root / "release" / A / f"{A}.ipynb", as_version=4)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                cell.source = answers[gid]
        target = battery.root / "submitted" / student / A / f"{A}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
        proc = course.nbgrader(battery.root, "autograde", A, "--student", student, "--force", timeout=600)
        out = _outputs(battery, student)
    finally:
        hits = [listener.close() for listener in listeners]
        for folder in ("submitted", "autograded"):
            shutil.rmtree(battery.root / folder / student, ignore_errors=True)
    assert "network isolated in the kernel" in proc.stdout, proc.stdout[-3000:]
    check_net_probe(out, hits, host)


# ---- a GPU week: kernels run in numba's CUDA simulator, a thread per GPU thread ----------------------------------

GPU_WEEK = "01-cuda-numba"
GPU_CASES = sorted(p.stem for p in (HOSTILE / GPU_WEEK).glob("*.py"))


@pytest.fixture(scope="module")
def gpu_battery(tmp_path_factory) -> Battery:
    """Week 01's honest ada and its hostile cases, graded together with two workers."""
    var_tmp = Path("/var/tmp")
    if var_tmp.is_dir() and os.access(var_tmp, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="sparkcourse-hostile-gpu-", dir=var_tmp))
        request_cleanup.append(root)
    else:
        root = tmp_path_factory.mktemp("hostile-gpu")
    shutil.copy2(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for name in ("source", "sample_class"):
        shutil.copytree(ROOT / name / GPU_WEEK, root / name / GPU_WEEK)
    with open(root / "nbgrader_config.py", "a") as fh:
        fh.write("\nc.Execute.timeout = 30\nc.SandboxedExecute.memory_mb = 3072\n")
    assert all(r.ok for r in course.build(root, [GPU_WEEK]))
    release = nbformat.read(root / "release" / GPU_WEEK / f"{GPU_WEEK}.ipynb", as_version=4)
    honest = authoring.read_answers(ROOT / "sample_class" / GPU_WEEK / "ada.py")
    for student in ["ada", *GPU_CASES]:
        extra = {} if student == "ada" else authoring.read_answers(HOSTILE / GPU_WEEK / f"{student}.py")
        answers = {**honest, **extra}
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                cell.source = answers[gid]
        target = root / "submitted" / student / GPU_WEEK / f"{GPU_WEEK}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
    results = {r.student: r for r in course.grade(root, [GPU_WEEK], progress=False, workers=2)}
    scores = {s: course.cell_scores(root, GPU_WEEK, s) for s, r in results.items() if r.ok}
    return Battery(root, results, scores, {}, {})


@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_week_hostile_submission_is_graded_right(gpu_battery, case):
    """A crash inside simulated GPU threads costs only the cell it broke: the kernel is restarted, the earlier
    simulator cells are run again, and every later cell is graded."""
    assert gpu_battery.results[case].ok, gpu_battery.results[case].message[-2000:]
    zero = set((HOSTILE / GPU_WEEK / f"{case}.py").read_text().splitlines()[0].split(":", 1)[1].split())
    got = gpu_battery.scores[case]
    assert zero <= set(got), f"unknown grade ids in {case}: {zero - set(got)}"
    wrong = {g: s for g, s in got.items() if s[0] != (0 if g in zero else s[1])}
    assert not wrong, f"{case}: cells graded wrong (score, max): {wrong}"


def test_gpu_week_honest_student_is_unaffected(gpu_battery):
    got = gpu_battery.scores["ada"]
    assert all(s == m for s, m in got.values()), got
