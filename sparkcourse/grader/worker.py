"""Long-lived grading workers: nbgrader, nbconvert, SQLAlchemy and the sandbox's grader side imported once per
``-j`` slot, not once per submission; each submission still gets a process and namespaces of its own.

``sparkcourse grade`` starts one worker per slot (``python -m sparkcourse.grader.worker MODE``). A worker imports
everything a grading needs, then, for each submission it is handed, forks a fresh copy of itself that does exactly
what ``isolation_prefix() + python -m nbgrader autograde ...`` did in a new process:

- the copy (C) enters new namespaces with ``unshare(2)``, as ``unshare --net --pid --fork --kill-child`` does (with
  ``--user --map-root-user`` where the probe found that only a user namespace is allowed);
- it forks the namespace's PID 1 (G), which brings the private loopback up and reaps orphans, as ``netns-exec``
  does; when G ends, every process left in the namespace dies with it;
- G forks the grader (H): ``nbgrader autograde ASSIGNMENT --student S --force``, run in-process by nbgrader's own
  application with the course's ``nbgrader_config.py`` (the sandbox kernel, its uid, mounts and limits are
  untouched: they are set up by the kernel and ``SandboxedExecute`` as before).

The worker itself never opens the gradebook, never starts a kernel and never runs a submission: every grading runs
in a process forked from the clean, freshly imported worker, so nothing one submission does (or breaks) reaches the
next. C, G and H die with their parent (``PR_SET_PDEATHSIG``): killing a worker ends whatever it was grading. The
worker answers one JSON line per job on its stdout: nbgrader's exit status and its log (stdout and stderr together),
the same text ``course.nbgrader`` returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG = 1
MODES = ("none", "ns", "userns")  # no namespaces; network + PID; user + network + PID (as isolation_prefix found)
LOG_HEAD, LOG_TAIL = 4 << 20, 1 << 20  # bytes of a grading's log kept from its start and its end
REFUSED = 75  # exit status of a copy whose namespaces were refused (the caller grades that one the old way)


def mode_of(prefix: tuple[str, ...]) -> str:
    """The worker mode that reproduces ``namespaces.isolation_prefix()``'s command prefix."""
    if not prefix:
        return "none"
    return "userns" if "--user" in prefix else "ns"


# ---- inside the worker ----------------------------------------------------------------------------------------

def _die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    """SIGKILL this process when its parent dies (and now, if it already has)."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() not in (parent, 0):  # (0: the first process of a new PID namespace sees no parent)
        os._exit(1)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _enter_namespaces(libc: ctypes.CDLL, mode: str) -> None:
    """``unshare --net --pid`` (``--user --map-root-user`` first in mode userns); OSError if refused."""
    if mode == "none":
        return
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET | CLONE_NEWPID | (CLONE_NEWUSER if mode == "userns" else 0)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if mode == "userns":
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")


def _grader(args: list[str], cwd: str) -> int:
    """H: ``nbgrader ARGS`` in this process (nbgrader's ``python -m nbgrader``), its exit status. ``--probe``
    instead prints what this process sees (its pid, parent, namespaces; tests), ``--probe crash`` crashes it,
    ``--probe linger SECONDS`` leaves a ``sleep SECONDS`` behind."""
    if args[:1] == ["--probe"]:
        if args[1:] == ["crash"]:
            os.kill(os.getpid(), signal.SIGSEGV)
        if args[1:2] == ["linger"]:  # a process that tries to outlive the grading
            subprocess.Popen(["sleep", *args[2:]], start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
                          **{f"{ns}ns": os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "pid", "user")}}))
        return 0
    from nbgrader.apps.nbgraderapp import NbGraderApp

    os.chdir(cwd)
    sys.argv = ["nbgrader", *args]
    try:
        NbGraderApp.launch_instance(argv=args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # nbgrader itself broke: its traceback is the log's last word, as in a process
        import traceback

        traceback.print_exc()
        code = 1
    return code


def _pid1(libc: ctypes.CDLL, args: list[str], cwd: str, namespaced: bool) -> int:
    """G: the namespace's first process: loopback up, the grader as a child, orphans reaped until it ends."""
    from sparkcourse.grader.sandbox.namespaces import loopback_up

    if namespaced:
        loopback_up()
    me = os.getpid()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            _die_with_parent(libc, me)
            code = _grader(args, cwd)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) & 0xFF


def _copy(job: dict, log_fd: int, mode: str, worker: int) -> int:
    """C: the per-submission copy of the worker: output to the log pipe, namespaces, then G; G's exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    _die_with_parent(libc, worker)
    os.setsid()  # one process group for C, G and H: the worker kills it at the backstop limit
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    os.environ.update(job.get("env", {}))
    try:
        _enter_namespaces(libc, mode)
    except OSError as exc:
        os.write(2, f"[sparkcourse.grader.worker] namespaces refused ({exc}): graded in a process instead\n".encode())
        return REFUSED
    me = os.getpid()
    g = os.fork()
    if g == 0:
        code = 1
        try:
            _die_with_parent(libc, me)
            code = _pid1(libc, job["args"], job["cwd"], mode != "none")
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    while True:
        try:
            pid, status = os.waitpid(g, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status) & 0xFF


def _keep(head: bytearray, tail: bytearray, chunk: bytes) -> None:
    """Keep the first LOG_HEAD bytes and the last LOG_TAIL bytes of a log."""
    room = LOG_HEAD - len(head)
    head += chunk[:room]
    tail += chunk[room:] if room > 0 else chunk
    del tail[:max(0, len(tail) - LOG_TAIL)]


def run_job(job: dict, mode: str) -> dict:
    """Grade one submission in a fresh copy of this worker; {"rc", "out"} as ``course.nbgrader`` returns them."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    worker = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            code = _copy(job, w, mode, worker)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    head, tail = bytearray(), bytearray()
    deadline = time.monotonic() + float(job.get("timeout") or 1e9)
    status, timed_out, ended = None, False, None
    while True:
        now = time.monotonic()
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status, ended = st, now
        if status is None and now > deadline and not timed_out:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if ended is not None and now - ended > 5:  # a stray holder of the pipe: do not wait for it
            break
        ready, _, _ = select.select([r], [], [], 0.2)
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                if status is None:
                    _, status = os.waitpid(pid, 0)
                break
            _keep(head, tail, chunk)
    os.close(r)
    out = (bytes(head) + (b"\n[sparkcourse] log cut\n" if len(tail) else b"") + bytes(tail)).decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status) if status is not None else -9
    if timed_out:
        rc = -9
        out += f"\n[sparkcourse] timed out after {job.get('timeout')} s"
    return {"rc": rc, "out": out, "refused": rc == REFUSED}


def serve(mode: str) -> int:
    """The worker's loop: import once, then one job per line on stdin, one answer per line on stdout."""
    import nbconvert.preprocessors  # noqa: F401
    import nbgrader.apps.nbgraderapp  # noqa: F401 - what every grading needs, imported once here
    import nbgrader.converters.autograde  # noqa: F401
    import nbgrader.preprocessors  # noqa: F401

    import sparkcourse.grader.feedback  # noqa: F401
    import sparkcourse.grader.metadata  # noqa: F401
    import sparkcourse.grader.sandbox.execute  # noqa: F401

    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        print(json.dumps({"error": "the worker has threads after its imports: it cannot fork safely"}), flush=True)
        return 1
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = run_job(json.loads(line), mode)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


# ---- the caller's side ------------------------------------------------------------------------------------------

class Worker:
    """One worker process, driven over its stdin/stdout."""

    def __init__(self, mode: str, env: dict[str, str], cwd: Path | None = None) -> None:
        """Start the worker (in the course root: ``-m`` puts it first on ``sys.path``, as ``python -m nbgrader``
        there did) and wait until its imports are done."""
        self.proc = subprocess.Popen([sys.executable, "-m", "sparkcourse.grader.worker", mode], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True, cwd=cwd)
        first = self.proc.stdout.readline() if self.proc.stdout else ""
        if not first.startswith('{"ready"'):
            self.close()
            raise RuntimeError(f"grading worker did not start: {first.strip() or 'no answer'}")

    def run(self, args: list[str], cwd: Path, timeout: float | None, env: dict[str, str]) -> dict:
        """Grade one submission; the worker's answer."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "timeout": timeout, "env": env}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("grading worker died")
        return json.loads(line)

    def close(self) -> None:
        """Stop the worker (and, through PR_SET_PDEATHSIG, whatever it was grading)."""
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill the worker now."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class WorkerPool:
    """``size`` workers, started together (their imports overlap), each grading one submission at a time."""

    def __init__(self, size: int, mode: str, env: dict[str, str], cwd: Path | None = None) -> None:
        """Start the workers; one that cannot start is left out (``run`` raises RuntimeError when none could)."""
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.size, self.mode, self.env, self.cwd = size, mode, env, cwd
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._all: list[Worker] = []
        self._lock = threading.Lock()
        with ThreadPoolExecutor(max_workers=size) as threads:
            started = list(threads.map(lambda _: self._start(), range(size)))
        for worker in started:
            if worker is not None:
                self._all.append(worker)
                self._idle.put(worker)

    def _start(self) -> Worker | None:
        try:
            return Worker(self.mode, self.env, self.cwd)
        except (OSError, RuntimeError):
            return None

    def _take(self) -> Worker:
        import queue

        while True:
            with self._lock:
                if not self._all:
                    raise RuntimeError("no grading worker could start")
            try:
                return self._idle.get(timeout=1)
            except queue.Empty:
                continue

    def run(self, args: list[str], cwd: Path, timeout: float | None, env: dict[str, str]) -> dict:
        """Grade on an idle worker; a worker that died is replaced (its job raises: the caller grades it the old
        way)."""
        worker = self._take()
        try:
            reply = worker.run(args, cwd, timeout, env)
        except Exception as exc:
            worker.kill()
            replacement = self._start()
            with self._lock:
                self._all.remove(worker)
                if replacement is not None:
                    self._all.append(replacement)
                    self._idle.put(replacement)
            raise RuntimeError(f"grading worker failed: {exc}") from exc
        self._idle.put(worker)
        return reply

    def close(self, kill: bool = False) -> None:
        """Stop every worker."""
        for worker in list(self._all):
            worker.kill() if kill else worker.close()
        self._all.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)


def main(argv: list[str] | None = None) -> int:
    """``python -m sparkcourse.grader.worker MODE`` (MODE: none, ns or userns)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0] not in MODES:
        print(main.__doc__, file=sys.stderr)
        return 2
    return serve(argv[0])


if __name__ == "__main__":
    sys.exit(main())
