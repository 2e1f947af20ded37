"""Sandboxed, crash-tolerant execution for ``nbgrader autograde`` (the grader's side).

- ``isolation_prefix()``: the command prefix that runs one ``nbgrader autograde`` in its own network namespace
  (only a private loopback: the grader and its kernel talk over it, nothing else is reachable) and PID namespace
  (when the grader ends or is killed, every process the submission started dies with it).
- ``SandboxedExecute``: nbgrader's Execute preprocessor, but the kernel is ``sparkcourse.grader.sandbox_kernel`` whatever
  the notebook's kernelspec says; a crashed or unresponsive kernel is restarted, the earlier cells that worked are
  run again to rebuild its state, the cell that broke records an error (0 points) and grading carries on; output
  is capped while it streams; the whole notebook has a time limit after which the remaining cells record 0.

Configured in nbgrader_config.py (``c.Autograde.autograde_preprocessors``); limits can be set there or through the
environment: SPARKCOURSE_NOTEBOOK_TIMEOUT (s), SPARKCOURSE_MEMORY_MB, SPARKCOURSE_NPROC, SPARKCOURSE_FSIZE_MB,
SPARKCOURSE_TMP_MB, SPARKCOURSE_OUTPUT_KB, SPARKCOURSE_SANDBOX=0 (no isolation: a trusted course only).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import random
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
from pathlib import Path
from time import monotonic

KEEP_VISIBLE = {"release", "sparkcourse", ".venv", "venv", "pyproject.toml", "README.md", "LICENSE",
                "environment.yml"}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def enabled() -> bool:
    """Sandboxing is on unless SPARKCOURSE_SANDBOX=0."""
    return os.environ.get("SPARKCOURSE_SANDBOX", "1") != "0"


@functools.cache
def isolation_prefix() -> tuple[tuple[str, ...], str]:
    """(command prefix, description): network + PID namespaces for one autograde, where the platform allows."""
    unshare = shutil.which("unshare")
    if not enabled() or sys.platform != "linux" or not unshare:
        return (), "no namespaces (" + ("disabled" if not enabled() else "not Linux or no unshare(1)") + ")"
    base = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    tries = [(base, "network + PID namespaces")] if os.geteuid() == 0 else []
    tries.append(([unshare, "--user", "--map-root-user", *base[1:]], "user + network + PID namespaces"))
    for cmd, what in tries:
        probe = subprocess.run([*cmd, sys.executable, "-m", "sparkcourse.grader.sandbox", "netns-exec", "--", "true"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return (*cmd, sys.executable, "-m", "sparkcourse.grader.sandbox", "netns-exec", "--"), what
    return (), "no namespaces (unshare refused: network open, processes not contained)"


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def netns_exec(argv: list[str]) -> int:
    """Inside fresh namespaces: bring the loopback up, run ``argv`` as a child and reap orphans (we are PID 1)."""
    _loopback_up()
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) & 0xFF


def hidden_paths(course_root: Path) -> list[str]:
    """What a submission must not see: everything in the course root (and in the package's own checkout, when
    it is one) except the release, the package and its environment; the kernel re-creates its own folder."""
    roots = {course_root.resolve()}
    pkg_root = Path(__file__).resolve().parents[2]
    if (pkg_root / "nbgrader_config.py").exists() or (pkg_root / "source").is_dir():
        roots.add(pkg_root)
    out = []
    for root in sorted(roots):
        for entry in sorted(root.iterdir()):
            if entry.name not in KEEP_VISIBLE:
                out.append(str(entry))
    return out


def kill_uid(uid: int) -> None:
    """Kill every process of the sandbox uid (root only): forked children and escapees of a submission."""
    if not uid or os.geteuid() != 0:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _make_preprocessor():
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async, run_sync
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import Execute
    from traitlets import Bool, Integer

    class SandboxKernelManager(AsyncKernelManager):
        """Always launches the sandbox kernel, whatever kernelspec the (student's) notebook names."""

        @property
        def kernel_spec(self):
            return KernelSpec(argv=[sys.executable, "-m", "sparkcourse.grader.sandbox_kernel", "-f", "{connection_file}"],
                              display_name="sparkcourse sandbox", language="python", env={})

    class SandboxedExecute(Execute):
        """Execute with isolation, restarts after crashes, streaming output caps and a notebook time limit."""

        notebook_timeout = Integer(_env_int("SPARKCOURSE_NOTEBOOK_TIMEOUT", 300),
                                   help="seconds for the whole notebook; later cells record 0").tag(config=True)
        max_restarts = Integer(5, help="kernel restarts per notebook before the rest records 0").tag(config=True)
        output_limit = Integer(_env_int("SPARKCOURSE_OUTPUT_KB", 256) * 1024,
                               help="bytes of output kept per cell").tag(config=True)
        memory_mb = Integer(_env_int("SPARKCOURSE_MEMORY_MB", 8192)).tag(config=True)
        nproc = Integer(_env_int("SPARKCOURSE_NPROC", 2048)).tag(config=True)  # numba's CUDA simulator: a thread per GPU thread
        fsize_mb = Integer(_env_int("SPARKCOURSE_FSIZE_MB", 64)).tag(config=True)
        tmp_mb = Integer(_env_int("SPARKCOURSE_TMP_MB", 256)).tag(config=True)
        isolate = Bool(enabled(), help="mount namespace, throw-away uid and limits in the kernel").tag(config=True)

        def __init__(self, *args, **kwargs):
            kwargs["kernel_manager_class"] = SandboxKernelManager
            super().__init__(*args, **kwargs)

        # -- set-up --------------------------------------------------------------------------------------
        def _locked_hashes(self, resources) -> list[str]:
            from nbgrader.api import Gradebook
            from nbgrader.preprocessors import OverwriteCells

            from sparkcourse.grader.sandbox_kernel import code_hash

            info = resources.get("nbgrader", {})
            try:
                with Gradebook(info["db_url"]) as gb:
                    nb = gb.find_notebook(info["notebook"], info["assignment"])
                    # a deleted locked cell comes back (OverwriteCells.add_missing_cells) under a comment line
                    note = "# " + OverwriteCells().missing_cell_notification
                    return sorted({h for c in nb.source_cells if c.locked and c.cell_type == "code"
                                   for h in (code_hash(c.source), code_hash(note.format(cell_id=c.name) + c.source))})
            except Exception as exc:  # no gradebook entry: nothing is trusted, every cell runs guarded
                self.log.warning("sandbox: no locked cells from the gradebook (%s)", exc)
                return []

        def preprocess(self, nb, resources, km=None):
            self._uid = random.randrange(200_000, 2_000_000) if self.isolate and os.geteuid() == 0 else 0
            policy = dict(isolate=self.isolate, uid=self._uid, hide=hidden_paths(Path.cwd()) if self.isolate else [],
                          locked=self._locked_hashes(resources), memory_mb=self.memory_mb, nproc=self.nproc,
                          fsize_mb=self.fsize_mb, tmp_mb=self.tmp_mb,
                          expose=[sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[1]),
                                  os.path.dirname(os.__file__), *site.getsitepackages(),
                                  *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
            self._kernel_env = dict(os.environ, SPARKCOURSE_SANDBOX=json.dumps(policy),
                                    NBGRADER_EXECUTION="autograde", SPARKCOURSE_PROFILE="tiny")
            self._deadline = monotonic() + self.notebook_timeout
            self._ran_ok: list[int] = []
            self._restarts = 0
            self._gave_up = ""
            self._out_bytes: dict[int, int] = {}
            try:
                return super().preprocess(nb, resources, km)
            finally:
                kill_uid(self._uid)

        async def async_start_new_kernel(self, **kwargs):
            kwargs.setdefault("env", self._kernel_env)
            return await super().async_start_new_kernel(**kwargs)

        start_new_kernel = run_sync(async_start_new_kernel)  # nbclient's sync alias points at its own method

        def _get_timeout(self, cell):
            timeout = super()._get_timeout(cell)
            left = max(1, int(self._deadline - monotonic()))
            return left if timeout is None else min(timeout, left)

        # -- output caps ---------------------------------------------------------------------------------
        def output(self, outs, msg, display_id, cell_index):
            size = len(json.dumps(msg.get("content", {}), default=str))
            used = self._out_bytes.get(cell_index, 0)
            self._out_bytes[cell_index] = used + size
            if used + size > self.output_limit:
                if used > self.output_limit:
                    return None
                content = msg.get("content", {})
                if msg.get("msg_type") == "stream" and isinstance(content.get("text"), str):
                    # keep the part of this chunk that fits: a line printed just before a flood is not lost
                    msg = {**msg, "content": {**content, "text": content["text"][:max(0, self.output_limit - used)]}}
                    super().output(outs, msg, display_id, cell_index)
                outs.append(new_output("stream", name="stdout",
                                       text=f"\n[sparkcourse: output truncated at {self.output_limit} bytes]\n"))
                return None
            return super().output(outs, msg, display_id, cell_index)

        # -- crash tolerance -----------------------------------------------------------------------------
        def _not_run(self, cell, why: str):
            cell.outputs = [new_output("error", ename="NotRun", evalue=why, traceback=[f"NotRun: {why}"])]

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type != "code" or not cell.source.strip():
                return super().preprocess_cell(cell, resources, index)
            if self._gave_up:
                self._not_run(cell, self._gave_up)
                return cell, resources
            if monotonic() >= self._deadline:
                self._not_run(cell, f"the notebook's time limit ({self.notebook_timeout} s) was reached")
                return cell, resources
            try:
                cell, resources = super().preprocess_cell(cell, resources, index)
            except (DeadKernelError, CellTimeoutError, RuntimeError, TimeoutError) as exc:
                dead = isinstance(exc, DeadKernelError) or "died" in str(exc).lower()
                ename = "KernelDied" if dead else "CellTimeoutError"
                why = ("the kernel died while running this cell (os._exit, a crash, or out of memory)" if dead
                       else "the cell did not stop when interrupted at its time limit")
                cell.outputs.append(new_output("error", ename=ename, evalue=why, traceback=[f"{ename}: {why}"]))
                self.log.warning("sandbox: cell %d: %s; restarting the kernel", index, why)
                self._recover(index)
                return cell, resources
            if not any(o.get("output_type") == "error" for o in cell.outputs):
                self._ran_ok.append(index)
            elif any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                self._recover(index, restart=not run_sync(self._async_responsive)())
            return cell, resources

        async def _async_responsive(self) -> bool:
            return await self._async_run_quietly("pass", 10) == "ok"

        async def _async_run_quietly(self, source: str, timeout: float) -> str:
            """Run code without recording output; 'ok', 'error' or 'dead'."""
            msg_id = self.kc.execute(source, store_history=False, allow_stdin=False)
            deadline = monotonic() + timeout
            while True:
                left = deadline - monotonic()
                if left <= 0:
                    return "dead"
                try:
                    msg = await ensure_async(self.kc.get_shell_msg(timeout=min(left, 1.0)))
                except Exception:
                    if not await ensure_async(self.km.is_alive()):
                        return "dead"
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return "ok" if msg["content"].get("status") == "ok" else "error"

        async def _async_restart(self):
            kill_uid(self._uid)
            if self.kc is not None:
                self.kc.stop_channels()
            await ensure_async(self.km.restart_kernel(now=True))
            self.kc = self.km.client()
            await ensure_async(self.kc.start_channels())
            await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))

        def _recover(self, index: int, restart: bool = True):
            """Restart the kernel, then re-run the earlier cells that worked; give up after max_restarts."""
            while restart:
                self._restarts += 1
                if self._restarts > self.max_restarts:
                    self._gave_up = f"the kernel was restarted {self.max_restarts} times; the rest was not run"
                    return
                try:
                    run_sync(self._async_restart)()
                except Exception as exc:
                    self._gave_up = f"the kernel could not be restarted ({type(exc).__name__})"
                    return
                restart = False
                for j in list(self._ran_ok):
                    if j >= index:
                        continue
                    timeout = max(1, min(self.timeout or 60, self._deadline - monotonic()))
                    if run_sync(self._async_run_quietly)(self.nb.cells[j].source, timeout) == "dead":
                        self._ran_ok.remove(j)  # it breaks the kernel now: leave it out and start again
                        restart = True
                        break

    return SandboxedExecute


def _make_dedup():
    from nbgrader.preprocessors import NbGraderPreprocessor

    class DropDuplicateGradeIds(NbGraderPreprocessor):
        """A later cell that repeats a grade id loses its nbgrader metadata (it becomes a plain cell, worth
        nothing); nbgrader's own DeduplicateIds can leave half-stripped metadata that OverwriteCells trips on."""

        def preprocess(self, nb, resources):
            seen = set()
            for cell in nb.cells:
                gid = cell.metadata.get("nbgrader", {}).get("grade_id")
                if gid is None:
                    continue
                if gid in seen:
                    del cell.metadata["nbgrader"]
                    self.log.warning("sandbox: dropped a duplicate of grade id %s", gid)
                seen.add(gid)
            return nb, resources

    return DropDuplicateGradeIds


def __getattr__(name):
    factories = {"SandboxedExecute": _make_preprocessor, "DropDuplicateGradeIds": _make_dedup}
    if name in factories:  # built lazily: importing this module must not import nbgrader
        cls = factories[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    """``python -m sparkcourse.grader.sandbox netns-exec -- CMD...`` (used by isolation_prefix) or ``probe``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["netns-exec"]:
        rest = argv[1:]
        return netns_exec(rest[1:] if rest[:1] == ["--"] else rest)
    if argv[:1] == ["probe"]:
        print(isolation_prefix()[1])
        return 0
    print(main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
