"""The grading kernel: an IPython kernel that isolates itself before it runs a submission.

Started by the grader (``sparkcourse.grader.sandbox.execute.SandboxedExecute``) as ``python -P -m
sparkcourse.grader.sandbox.kernel -f CONNECTION_FILE`` with its policy in the ``SPARKCOURSE_SANDBOX`` environment
variable (JSON). In order (``isolation`` and ``guards`` say what each step does):

1. while still single-threaded, as root: the guards read the reference and take it into their keeping (an audit
   hook, a meta-path finder serving stand-in modules, an import hook), the mount namespace hides the course's
   private files and the reference, the environment is cleaned, and the kernel leaves the grader's network
   namespace for one of its own (only its loopback);
2. ipykernel binds each of its sockets in the grader's network namespace (``SandboxKernelApp``: the grader can
   reach the kernel) and starts its threads in the kernel's own (nothing the submission opens reaches out);
3. before the shell exists (nothing of the submission's has run): the throw-away uid for every thread, resource
   limits, the student's folder on ``sys.path``;
4. before every locked cell: monkeypatched builtins, helpers, IPython hooks and kernel methods are restored, and the
   guards learn which cell runs (they, not the kernel, hold the locked cells' hashes); after every cell: reference
   objects leave the namespace, whatever their name.

``-P`` matters: without it Python would put the working directory (the student's folder, which can hold any
``.py`` file the student submitted) first on ``sys.path`` while the kernel is still root.
"""

from __future__ import annotations

import builtins
import errno
import functools
import gc
import json
import linecache
import os
import sys
import threading
import types
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import zmq
from ipykernel.heartbeat import Heartbeat
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp

from sparkcourse.grader.authoring import BEGIN_HIDDEN, strip_hidden
from sparkcourse.grader.sandbox import guards, isolation
from sparkcourse.grader.sandbox.guards import EV_CELL, is_reference, is_reference_name
from sparkcourse.grader.sandbox.isolation import NOTES, KernelNetwork

TRUSTED_MODULES = ("sparkcourse", "math", "cmath", "operator", "functools", "numpy", "torch", "random",
                   "inspect", "types", "re", "json", "statistics", "fractions", "decimal", "collections",
                   "itertools", "importlib", "sys", "os", "traceback", "warnings", "pytest", "unittest", "codeop")
PATCHABLE_CLASSES = ("IPython", "ipykernel", "sparkcourse", "codeop", __name__)
POLICY: dict = {}
_TIMING = bool(os.environ.get("SPARKCOURSE_TIMING"))  # benchmarks/grading_speed.py --breakdown: phase time stamps


def _stamp(phase: str) -> None:
    """With SPARKCOURSE_TIMING set: write when a start-up phase ended (wall clock) to the grader's log."""
    if _TIMING:
        import time

        os.write(2, f"[sparkcourse.grader.timing] kernel {phase} {time.time():.4f}\n".encode())


class BoundHeartbeat(Heartbeat):
    """ipykernel's heartbeat, but its socket is made and bound by the calling thread (in the grader's network
    namespace); its own thread only answers pings."""

    def __init__(self, context: zmq.Context, addr: tuple, network: KernelNetwork | None, **curve: Any) -> None:
        """Create and bind the socket now."""
        super().__init__(context, addr, **curve)
        self.socket = context.socket(zmq.ROUTER)
        self.socket.linger = 1000
        if self._curve_secretkey is not None:
            self.socket.curve_secretkey = self._curve_secretkey
            self.socket.curve_publickey = self._curve_publickey
            self.socket.curve_server = True
        with network.grader_side() if network else nullcontext():
            self._bind_socket()

    def run(self) -> None:
        """Echo pings until the context ends (Heartbeat.run without making and binding the socket)."""
        self.name = "Heartbeat"
        while True:
            try:
                zmq.device(zmq.QUEUE, self.socket, self.socket)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno == zmq.ETERM:
                    try:
                        self.socket.close()
                    except zmq.ZMQError:
                        pass
                break
            else:
                break


class SandboxKernelApp(IPKernelApp):
    """IPKernelApp that binds its sockets in the grader's network namespace and leaves root before the shell
    exists. ``network`` and ``leave_root`` are set before ``initialize``."""

    network: KernelNetwork | None = None
    leave_root: Any = None

    def _grader_side(self) -> AbstractContextManager:
        """The grader's network namespace, for binding (nothing to do where the kernel has none of its own)."""
        return self.network.grader_side() if self.network else nullcontext()

    def _bind_socket(self, s: zmq.Socket, port: int) -> int:
        """Bind in the grader's namespace: the grader connects to it there."""
        with self._grader_side():
            return super()._bind_socket(s, port)

    def init_heartbeat(self) -> None:
        """The heartbeat: its socket bound here, in the grader's namespace; its thread in the kernel's."""
        self.heartbeat = BoundHeartbeat(zmq.Context(), (self.transport, self.ip, self.hb_port), self.network,
                                        curve_publickey=self.curve_publickey, curve_secretkey=self.curve_secretkey)
        self.hb_port = self.heartbeat.port
        self.log.debug("Heartbeat REP Channel on port: %i", self.hb_port)
        self.heartbeat.start()

    def init_io(self) -> None:
        """Every socket is bound and the connection file written: forget the grader's namespace, leave root."""
        if self.network is not None:
            self.network.seal()
        leave, self.leave_root = self.leave_root, None
        if leave is not None:
            leave()
        super().init_io()


class SandboxKernel(IPythonKernel):
    """Restores what a submission may have patched before each locked cell; keeps reference objects away."""

    def __init__(self, **kwargs: Any) -> None:
        """Snapshot what locked cells rely on (builtins, trusted modules, IPython hooks, kernel methods)."""
        super().__init__(**kwargs)
        self._builtins = dict(vars(builtins))
        self._modules: dict[str, tuple[types.ModuleType, dict]] = {}
        self._protected: dict[str, object] = {}
        self._frozen = False
        self._snapshot_modules()
        sh = self.shell
        self._hooks = {name: list(getattr(sh, name)) for name in
                       ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")}
        self._events = {k: list(v) for k, v in sh.events.callbacks.items()}
        self._sys = {k: getattr(sys, k) for k in ("excepthook", "displayhook", "breakpointhook")}
        self._sys_lists = {k: list(getattr(sys, k)) for k in ("meta_path", "path_hooks")}
        self._inst = {id(o): (o, dict(vars(o))) for o in (sh, self, sh.display_formatter, sh.displayhook, sh.compile)}
        self._classes = {cls: dict(vars(cls)) for obj in (sh, self, sh.compile) for cls in type(obj).__mro__
                         if cls.__module__.split(".")[0] in PATCHABLE_CLASSES}

    def _snapshot_modules(self) -> None:
        """Remember the callables (and, for the course's modules, constants) of trusted modules."""
        with warnings.catch_warnings():  # a module's deprecated attributes warn when inspected (torch.distributed)
            warnings.simplefilter("ignore")
            self._snapshot_modules_quietly()

    def _snapshot_modules_quietly(self) -> None:
        """The snapshot itself (see :meth:`_snapshot_modules`)."""
        for name, mod in list(sys.modules.items()):
            if name in self._modules or not isinstance(mod, types.ModuleType) or is_reference(mod):
                continue
            if name.split(".")[0] in TRUSTED_MODULES or name == "builtins":
                course = name.split(".")[0] == "sparkcourse"  # course constants too, not only functions
                self._modules[name] = (mod, {k: v for k, v in list(vars(mod).items()) if callable(v)
                                             or isinstance(v, types.ModuleType)
                                             or (course and isinstance(v, int | float | str))})

    def _restore_names(self) -> None:
        """Builtins, trusted modules' attributes and the names locked cells defined, as they were."""
        b = vars(builtins)
        for k in [k for k in b if k not in self._builtins]:
            del b[k]
        b.update((k, v) for k, v in self._builtins.items() if b.get(k) is not v)
        for name, (mod, snap) in self._modules.items():
            if sys.modules.get(name) is not mod:
                sys.modules[name] = mod
            d = vars(mod)
            for k, v in snap.items():
                if d.get(k) is not v:
                    d[k] = v
        ns = self.shell.user_ns
        for k, v in self._protected.items():
            if ns.get(k) is not v:
                ns[k] = v

    def _restore_objects(self) -> None:
        """Methods patched onto the shell's and the kernel's classes and instances, as they were."""
        for cls, snap in self._classes.items():
            for k, v in snap.items():
                if vars(cls).get(k) is not v and k not in ("__dict__", "__weakref__", "__doc__"):
                    try:
                        setattr(cls, k, v)
                    except (AttributeError, TypeError):
                        pass
            for k in [k for k in vars(cls) if k not in snap]:
                try:
                    delattr(cls, k)
                except (AttributeError, TypeError):
                    pass
        for obj, snap in self._inst.values():
            d = vars(obj)
            for k in [k for k in d if k not in snap and callable(d[k])]:
                del d[k]
            for k, v in snap.items():
                if d.get(k) is not v and callable(v):
                    d[k] = v

    def _restore_hooks(self) -> None:
        """IPython's transformers, events and exception handlers, and the interpreter's hooks, as they were."""
        sh = self.shell
        for name, value in self._hooks.items():
            getattr(sh, name)[:] = value
        sh.events.callbacks.clear()
        sh.events.callbacks.update({k: list(v) for k, v in self._events.items()})
        sh.custom_exceptions, sh.CustomTB = (), None
        for k, v in self._sys.items():
            setattr(sys, k, v)
        for k, v in self._sys_lists.items():
            getattr(sys, k)[:] = v
        sys.settrace(None)
        sys.setprofile(None)
        sys.last_type = sys.last_value = sys.last_traceback = None  # a failed cell's frames keep memory
        gc.collect()  # (cheap: what the set-up cell imported is frozen, see _after_cell)
        threading.settrace(None)
        threading.setprofile(None)

    def _restore(self) -> None:
        """Undo monkeypatching of builtins, trusted modules, names set by locked cells, IPython and the kernel."""
        self._restore_names()
        self._restore_objects()
        self._restore_hooks()

    def _hide_reference(self) -> None:
        """After every cell: reference modules and objects leave sys.modules, the namespace (whatever their name:
        ``ref``, ``_ref``, ``_``) and IPython's output history; a failed test's traceback goes too."""
        sh = self.shell
        ns = sh.user_ns
        for k in [k for k, v in list(ns.items()) if is_reference(v)]:
            del ns[k]
        out = ns.get("Out")
        if type(out) is dict:
            for k in [k for k, v in list(out.items()) if is_reference(v)]:
                del out[k]
        for attr in ("_", "__", "___"):
            if is_reference(vars(sh.displayhook).get(attr)):
                setattr(sh.displayhook, attr, None)
        for name in [n for n in sys.modules if is_reference_name(n)]:
            sys.modules.pop(name, None)
        pkg = sys.modules.get("sparkcourse")
        if pkg is not None and "reference" in vars(pkg):
            delattr(pkg, "reference")

    def _scrub_hidden_tests(self) -> None:
        """After a locked cell: its hidden tests leave what IPython remembers of it (``In``, ``_i*``, the history
        manager, linecache), which a later solution cell could otherwise print into its feedback."""
        def clean(value: object) -> object:
            """``value`` without hidden tests."""
            return strip_hidden(value) if isinstance(value, str) and BEGIN_HIDDEN in value else value

        hm = self.shell.history_manager
        for hist in (hm.input_hist_parsed, hm.input_hist_raw):
            hist[:] = [clean(src) for src in hist]
        for attr in ("_i00", "_i", "_ii", "_iii"):
            setattr(hm, attr, clean(getattr(hm, attr)))
        ns = self.shell.user_ns
        for k, v in list(ns.items()):
            if k.startswith("_i") and isinstance(v, str):
                ns[k] = clean(v)
        for name, entry in list(linecache.cache.items()):
            if len(entry) == 4 and isinstance(entry[2], list) and any(BEGIN_HIDDEN in ln for ln in entry[2]):
                text = clean("".join(entry[2]))
                linecache.cache[name] = (len(text), None, text.splitlines(keepends=True), name)

    def _cell_begins(self, code: str) -> tuple[bool, dict[str, int]]:
        """Ask the guards whether this cell is locked (they hold the hashes); before a locked cell, restore what
        the submission patched and tell them the cell's file name. (Locked?, the namespace's ids before it.)"""
        box: list = []
        sys.audit(EV_CELL, "begin", code, box)
        if not (box and box[0] is True):
            sys.audit(EV_CELL, "student", "", None)
            return False, {}
        self._restore()
        before = {k: id(v) for k, v in list(self.shell.user_ns.items())}
        sys.audit(EV_CELL, "locked", self.shell.compile.get_code_name(code, code, 0), None)
        return True, before

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict | None = None, allow_stdin: bool = False, **kwargs: Any) -> dict:
        """Run a cell between the guards' bookkeeping (which never costs the student the cell)."""
        locked, before = False, {}
        try:
            locked, before = self._cell_begins(code)
        except Exception as exc:  # a guard must never cost the student the cell
            sys.stderr.write(f"[sparkcourse.grader.sandbox] guard before cell: {exc!r}\n")
        try:
            return await super().do_execute(code, silent, store_history, user_expressions, allow_stdin, **kwargs)
        finally:
            try:
                sys.audit(EV_CELL, "idle", "", None)
                self._after_cell(locked, before)
            except Exception as exc:
                sys.stderr.write(f"[sparkcourse.grader.sandbox] guard after cell: {exc!r}\n")

    def _after_cell(self, locked: bool, before: dict[str, int]) -> None:
        """Hide the reference; after a locked cell, remember what it defined (restored before later ones)."""
        self._hide_reference()
        if not locked:
            return
        self._scrub_hidden_tests()
        for k, v in list(self.shell.user_ns.items()):
            if not k.startswith("_") and before.get(k) != id(v):
                self._protected[k] = v
        self._snapshot_modules()
        self._builtins.update({k: v for k, v in list(vars(builtins).items()) if k not in self._builtins})
        if not self._frozen:
            # After the first locked cell (the set-up: torch, numpy, the course's modules imported), what is alive
            # is frozen: the full collection before every later locked cell then scans only newer objects
            # (milliseconds, not the ~0.5 s a pass over torch's objects takes). Everything created after the
            # set-up is collected exactly as before; what the set-up made stays, as it would anyway.
            self._frozen = True
            gc.collect()
            gc.freeze()
        sys.last_type = sys.last_value = sys.last_traceback = None  # a failed test's frames


def _install_guards() -> str | None:
    """Read the reference while it is visible and hand it to the guards (nothing here keeps it); the reference
    folder, to hide."""
    import codeop
    import site

    from IPython.core.compilerop import CachingCompiler

    sources, ref_folder = guards.read_reference_sources()
    trusted = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(os.__file__)),
               *site.getsitepackages(), site.getusersitepackages()]  # (the grader's user site: HOME not yet cleaned)
    guards.install(sources, trusted + ([os.path.dirname(ref_folder)] if ref_folder else []),
                   {SandboxKernel.do_execute.__code__, SandboxKernel._cell_begins.__code__},
                   set(POLICY.pop("locked", [])), BEGIN_HIDDEN,
                   {codeop.Compile.__call__.__code__, CachingCompiler.ast_parse.__code__})
    return ref_folder


def _isolate(argv: list[str], cwd: str) -> tuple[str, bool, str | None]:
    """Mounts and a clean environment, while still root; (the kernel's home, files isolated?, connection file
    copied there)."""
    conn = argv[argv.index("-f") + 1] if "-f" in argv else None
    conn_text = open(conn).read() if conn else None  # noqa: SIM115 - read before the mounts hide it
    isolated = isolation.isolate_files(POLICY, cwd) if POLICY.get("isolate", True) else False
    home = "/tmp/.home" if isolated else os.path.join(cwd, ".home")
    os.makedirs(home, exist_ok=True)
    if conn_text is not None:
        conn = os.path.join(home, "kernel.json")
        with open(conn, "w") as fh:
            fh.write(conn_text)
        argv[argv.index("-f") + 1] = conn
    isolation.clean_environment(home)
    return home, isolated, conn


def _leave_root(cwd: str, home: str, isolated: bool, conn: str | None) -> None:
    """The throw-away uid (every thread) and limits; then the student's folder on sys.path; say what held."""
    dropped = isolation.drop_privileges(int(POLICY.get("uid", 0)), [cwd, home] if isolated else [home]) \
        if POLICY.get("isolate", True) else False
    if dropped and conn is not None:
        os.chmod(conn, 0o600)
    isolation.apply_limits(POLICY, dropped)
    sys.path.insert(0, cwd)  # off root now: the student's own modules may be imported (-P kept them out so far)
    sys.stderr.write("".join(f"[sparkcourse.grader.sandbox] {n}\n" for n in NOTES))
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Isolate, bind, leave root, then run the kernel."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _stamp("imports")
    POLICY.update(json.loads(os.environ.pop("SPARKCOURSE_SANDBOX", "{}") or "{}"))
    ref_folder = _install_guards()
    _stamp("guards")
    POLICY["hide"] = list(POLICY.get("hide", [])) + ([ref_folder] if ref_folder else [])
    import sparkcourse  # the copy this kernel imports, which may not be the grader's: it must stay reachable

    POLICY["expose"] = [*POLICY.get("expose", []), os.path.dirname(os.path.abspath(sparkcourse.__file__))]
    cwd = os.getcwd()
    home, isolated, conn = _isolate(argv, cwd)
    _stamp("mounts")
    network = isolation.leave_network(POLICY)  # (still single-threaded: every thread to come starts there)
    _stamp("network")
    threading.stack_size(2 * 1024 * 1024)  # 2 MB stacks: a thousand simulator threads fit the memory cap
    devnull = os.open(os.devnull, os.O_WRONLY)  # (stderr stays: the grader's log; the PID namespace and the
    os.dup2(devnull, 1)                         # uid sweep end stray children that hold it open)
    app = SandboxKernelApp.instance(kernel_class=SandboxKernel)
    app.network = network
    app.leave_root = functools.partial(_leave_root, cwd, home, isolated, conn)
    app.initialize([*argv, "--HistoryManager.enabled=False"])  # no history database holding the hidden tests
    _stamp("initialized")
    app.start()


if __name__ == "__main__":
    main()
