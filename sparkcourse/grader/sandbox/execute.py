"""nbgrader's side of the sandbox: the Execute preprocessor that launches the sandbox kernel.

``SandboxedExecute`` is nbgrader's Execute preprocessor, but the kernel is ``sparkcourse.grader.sandbox.kernel``
whatever the notebook's kernelspec says; a crashed or unresponsive kernel is restarted, the earlier cells that
worked are run again to rebuild its state, the cell that broke records an error (0 points) and grading carries
on; output is capped while it streams; the whole notebook has a time limit after which the remaining cells record
0. ``DropDuplicateGradeIds`` strips the metadata of a repeated grade id before nbgrader sees it.

Configured in nbgrader_config.py (``c.Autograde.autograde_preprocessors``); limits can be set there or through the
environment: SPARKCOURSE_NOTEBOOK_TIMEOUT (s), SPARKCOURSE_MEMORY_MB, SPARKCOURSE_NPROC, SPARKCOURSE_FSIZE_MB,
SPARKCOURSE_TMP_MB, SPARKCOURSE_OUTPUT_KB, SPARKCOURSE_SANDBOX=0 (no isolation: a trusted course only).
"""

from __future__ import annotations

import json
import os
import random
import site
import sys
from pathlib import Path
from time import monotonic
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Enum, Integer

from sparkcourse.grader.sandbox.guards import code_hash
from sparkcourse.grader.sandbox.namespaces import enabled, kill_uid

KEEP_VISIBLE = {"release", "sparkcourse", ".venv", "venv", "pyproject.toml", "README.md", "LICENSE",
                "environment.yml"}
PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the sparkcourse package


def _env_int(name: str, default: int) -> int:
    """An integer from the environment, or ``default``."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def hidden_paths(course_root: Path) -> list[str]:
    """What a submission must not see: everything in the course root (and in the package's own checkout, when
    it is one) except the release, the package and its environment; the kernel re-creates its own folder."""
    roots = {course_root.resolve()}
    if (PACKAGE_ROOT / "nbgrader_config.py").exists() or (PACKAGE_ROOT / "source").is_dir():
        roots.add(PACKAGE_ROOT)
    out = []
    for root in sorted(roots):
        for entry in sorted(root.iterdir()):
            if entry.name not in KEEP_VISIBLE:
                out.append(str(entry))
    return out


def exposed_paths() -> list[str]:
    """Folders the kernel must reach as a throw-away uid: the Python installation and the package."""
    return [sys.prefix, sys.base_prefix, sys.exec_prefix, str(PACKAGE_ROOT / "sparkcourse"),
            os.path.dirname(os.__file__), *site.getsitepackages(),
            *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]


class SandboxKernelManager(AsyncKernelManager):
    """Always launches the sandbox kernel, whatever kernelspec the (student's) notebook names."""

    @property
    def kernel_spec(self) -> KernelSpec:
        """The sandbox kernel's spec."""
        return KernelSpec(argv=[sys.executable, "-P", "-m", "sparkcourse.grader.sandbox.kernel", "-f",
                                "{connection_file}"],
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
    isolate = Bool(enabled(), help="mount and network namespaces, throw-away uid and limits in the kernel").tag(
        config=True)
    # Every output is in once the last cell has run: the kernel is killed, not asked to stop (a graceful shutdown
    # waited seconds for a kernel that does not stop by itself; its working copy is a throw-away tmpfs, and every
    # process of its uid is killed afterwards anyway).
    shutdown_kernel = Enum(["graceful", "immediate"], default_value="immediate").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Execute, with the sandbox kernel manager."""
        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)

    # -- set-up ------------------------------------------------------------------------------------------
    def _locked_hashes(self, resources: dict) -> list[str]:
        """Hashes of the locked code cells from the gradebook (a restored deleted cell too): what runs trusted."""
        from nbgrader.api import Gradebook
        from nbgrader.preprocessors import OverwriteCells

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

    def _policy(self, resources: dict) -> dict:
        """What the kernel is told (SPARKCOURSE_SANDBOX, JSON): isolation, uid, paths, locked cells, limits."""
        return dict(isolate=self.isolate, uid=self._uid, hide=hidden_paths(Path.cwd()) if self.isolate else [],
                    locked=self._locked_hashes(resources), memory_mb=self.memory_mb, nproc=self.nproc,
                    fsize_mb=self.fsize_mb, tmp_mb=self.tmp_mb, expose=exposed_paths())

    def preprocess(self, nb: Any, resources: dict, km: Any = None) -> tuple[Any, dict]:
        """Run the notebook in a fresh sandbox kernel; every process of its uid is killed afterwards."""
        self._uid = random.randrange(200_000, 2_000_000) if self.isolate and os.geteuid() == 0 else 0
        self._kernel_env = dict(os.environ, SPARKCOURSE_SANDBOX=json.dumps(self._policy(resources)),
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

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        """Start the kernel with the sandbox policy in its environment."""
        kwargs.setdefault("env", self._kernel_env)
        return await super().async_start_new_kernel(**kwargs)

    start_new_kernel = run_sync(async_start_new_kernel)  # nbclient's sync alias points at its own method

    def _get_timeout(self, cell: Any) -> int:
        """The cell's limit, never past the notebook's deadline."""
        timeout = super()._get_timeout(cell)
        left = max(1, int(self._deadline - monotonic()))
        return left if timeout is None else min(timeout, left)

    # -- output caps -------------------------------------------------------------------------------------
    def output(self, outs: list, msg: dict, display_id: str, cell_index: int) -> Any:
        """Record an output message unless the cell's output is over the cap (the chunk that crosses it is cut)."""
        size = len(json.dumps(msg.get("content", {}), default=str))
        used = self._out_bytes.get(cell_index, 0)
        self._out_bytes[cell_index] = used + size
        if used + size <= self.output_limit:
            return super().output(outs, msg, display_id, cell_index)
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

    # -- crash tolerance ---------------------------------------------------------------------------------
    def _not_run(self, cell: Any, why: str) -> None:
        """Record why a cell was not run (0 points)."""
        cell.outputs = [new_output("error", ename="NotRun", evalue=why, traceback=[f"NotRun: {why}"])]

    def preprocess_cell(self, cell: Any, resources: dict, index: int) -> tuple[Any, dict]:
        """Run one cell; a dead or stuck kernel costs this cell only (restart, rebuild, carry on)."""
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if self._gave_up or monotonic() >= self._deadline:
            self._not_run(cell, self._gave_up or f"the notebook's time limit ({self.notebook_timeout} s) was reached")
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
        """True if the kernel still answers."""
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

    async def _async_restart(self) -> None:
        """A fresh kernel (every process of the old one's uid killed first)."""
        kill_uid(self._uid)
        if self.kc is not None:
            self.kc.stop_channels()
        await ensure_async(self.km.restart_kernel(now=True))
        self.kc = self.km.client()
        await ensure_async(self.kc.start_channels())
        await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))

    def _rebuild(self, index: int) -> bool:
        """Re-run the cells before ``index`` that worked; False (and the culprit dropped) if one kills the kernel."""
        for j in list(self._ran_ok):
            if j >= index:
                continue
            timeout = max(1, min(self.timeout or 60, self._deadline - monotonic()))
            if run_sync(self._async_run_quietly)(self.nb.cells[j].source, timeout) == "dead":
                self._ran_ok.remove(j)  # it breaks the kernel now: leave it out and start again
                return False
        return True

    def _recover(self, index: int, restart: bool = True) -> None:
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
            restart = not self._rebuild(index)


class DropDuplicateGradeIds(NbGraderPreprocessor):
    """A later cell that repeats a grade id loses its nbgrader metadata (it becomes a plain cell, worth
    nothing); nbgrader's own DeduplicateIds can leave half-stripped metadata that OverwriteCells trips on."""

    def preprocess(self, nb: Any, resources: dict) -> tuple[Any, dict]:
        """Strip the metadata of every repeat of a grade id."""
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
