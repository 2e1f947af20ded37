"""The grading kernel: an IPython kernel that isolates itself before it runs a submission.

Started by the grader (``sparkcourse.grading.sandbox.SandboxedExecute``) as ``python -m sparkcourse.grading.sandbox_kernel -f
CONNECTION_FILE`` with its policy in the ``SPARKCOURSE_SANDBOX`` environment variable (JSON). In order:

1. While still single-threaded: a private mount namespace (where the platform allows it) in which the course's
   private files (source/, the gradebook, other students' folders, authoring/, ...) and the reference solutions
   are hidden behind empty mounts, every other mount is read-only, ``/tmp`` and ``/dev/shm`` are fresh size-capped
   tmpfs, and the working directory is a tmpfs copy of the student's own folder.
2. As root: drop to a throw-away uid chosen by the grader (so RLIMIT_NPROC holds and the grader's files are not
   the kernel's to write); resource limits (address space, file size, processes, no core files); an environment
   reduced to a few harmless variables.
3. In the kernel: guards for the Python-level attacks that the OS cannot see (monkeypatched helpers, builtins and
   IPython hooks are restored before every locked cell; ``sparkcourse.reference`` can be neither imported nor
   called from code the student wrote). What each layer does not cover is in the README's threat model.

The network namespace is not made here: the grader runs each ``nbgrader autograde`` inside its own network and
PID namespace (``sparkcourse.grading.sandbox.isolation_prefix``), so the kernel shares a private loopback with its grader
and nothing else.
"""

from __future__ import annotations

import builtins
import ctypes
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import resource
import shutil
import sys
import types

REFERENCE = "sparkcourse.reference"
NOTES: list[str] = []

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
CLONE_NEWNS = 0x00020000
_FLAG_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def code_hash(source: str) -> str:
    """The id of a locked cell: sha256 of its exact source (the grader computes the same from the gradebook)."""
    return hashlib.sha256(source.encode()).hexdigest()


# ---- OS isolation ------------------------------------------------------------------------------------------

def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _mount(libc, src, target, fstype, flags, data=None):
    def enc(s):
        return (None if s is None else str(s).encode())
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mountpoints() -> list[tuple[str, set[str]]]:
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            out.append((point, set(parts[5].split(","))))
    return out


def _expose(libc, targets: list[str]) -> None:
    """Make the interpreter and the package reachable for a throw-away uid: an ancestor folder that others
    cannot enter (say a 0700 home holding the Python install) is covered by an empty tmpfs through which only
    the needed sub-folders are bound back (the rest of that folder is hidden as a bonus)."""
    covered: set[str] = set()
    for n, target in enumerate(sorted({os.path.realpath(t) for t in targets if t})):
        parts = target.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i]) or os.sep
            if ancestor in covered or os.stat(ancestor).st_mode & 0o001:
                continue
            needed = sorted({os.sep.join(t.split(os.sep)[:i + 1]) for t in map(os.path.realpath, targets)
                             if t.startswith(ancestor + os.sep)})
            stages = []
            for k, path in enumerate(needed):
                stage = f"/dev/shm/.expose{n}.{k}"
                os.mkdir(stage)
                _mount(libc, path, stage, None, MS_BIND | MS_REC)
                stages.append((path, stage))
            _mount(libc, "tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
            for path, stage in stages:
                os.mkdir(path)
                _mount(libc, stage, path, None, MS_BIND | MS_REC)
                libc.umount2(stage.encode(), 2)  # MNT_DETACH
                os.rmdir(stage)
            covered.add(ancestor)


def _strip_hidden_tests(folder: str) -> None:
    """Remove hidden-test blocks from every notebook in the kernel's copy of the submission folder.

    nbgrader writes the notebook it grades, hidden tests restored, into that folder before running it; the
    kernel executes cells sent over the wire and never needs the file, so the copy it can read has none.
    """
    from pathlib import Path

    from sparkcourse.grading.authoring import BEGIN_HIDDEN as BEGIN
    from sparkcourse.grading.authoring import strip_hidden

    for path in Path(folder).rglob("*.ipynb"):
        try:
            nb = json.loads(path.read_text())
            for cell in nb.get("cells", []):
                src = cell.get("source", "")
                src = "".join(src) if isinstance(src, list) else src
                if BEGIN in src:
                    cell["source"] = strip_hidden(src)
            path.write_text(json.dumps(nb))
        except (OSError, ValueError, AttributeError):
            path.unlink(missing_ok=True)  # unreadable: the kernel does not need it


def _keep_under_tmp(libc, targets: list[str]) -> list[str]:
    """Bind what the kernel needs from the real /tmp (a virtual environment or checkout there) into the private
    tmpfs that is about to replace it, at the same path, read-only."""
    under = sorted({os.path.realpath(t) for t in targets if t and os.path.realpath(t).startswith("/tmp/")
                    and os.path.isdir(os.path.realpath(t))})
    kept: list[str] = []
    for path in under:
        if any(path == k or path.startswith(k + os.sep) for k in kept):
            continue
        stage = os.path.join("/dev/shm", os.path.relpath(path, "/tmp"))
        os.makedirs(stage, exist_ok=True)
        _mount(libc, path, stage, None, MS_BIND | MS_REC)
        _mount(libc, None, stage, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        kept.append(path)
    return kept


def isolate_files(policy: dict, cwd: str) -> bool:
    """Mount namespace: hide private paths, everything else read-only, private writable tmp and cwd."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        NOTES.append(f"files NOT isolated (no mount namespace: {os.strerror(ctypes.get_errno())}); "
                     "the submission sees the grader's files with the grader's permissions")
        return False
    tmp_mb = int(policy.get("tmp_mb", 256))
    try:
        _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
        # The private /tmp is filled on /dev/shm (cwd may itself lie under /tmp), then moved onto /tmp.
        _mount(libc, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
        shutil.copytree(cwd, "/dev/shm/.work", symlinks=True, ignore_dangling_symlinks=True)
        _strip_hidden_tests("/dev/shm/.work")  # the notebook being graded holds the restored hidden tests
        _expose(libc, policy.get("expose", []))
        kept = _keep_under_tmp(libc, policy.get("expose", []))
        _mount(libc, "/dev/shm", "/tmp", None, MS_MOVE)  # the kept binds move with it, to their old paths
        work = "/tmp/.work"
        hidden = 0
        for path in policy.get("hide", []):
            if os.path.islink(path) or not os.path.exists(path):
                continue
            if os.path.isdir(path):
                _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=755")
            else:  # /dev/null on a nodev mount: opening it fails, so nothing is read and no write "succeeds"
                _mount(libc, "/dev/null", path, None, MS_BIND)
                _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC)
            hidden += 1
        os.makedirs(cwd, exist_ok=True)  # the mount point, inside a hiding tmpfs when cwd was hidden
        skip = ("/proc", "/sys", "/dev", "/tmp")
        for point, opts in _mountpoints():
            if any(point == s or point.startswith(s + "/") for s in skip):
                continue
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for name, bit in _FLAG_OPTS.items():
                if name in opts:
                    flags |= bit
            try:
                _mount(libc, None, point, None, flags)
            except OSError as exc:
                NOTES.append(f"could not make {point} read-only ({exc.strerror})")
        _mount(libc, work, cwd, None, MS_BIND)
        os.chdir(cwd)
        try:
            _mount(libc, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
        except OSError:
            pass
        try:  # a /proc of the grader's PID namespace: the submission sees only its own processes
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
    except OSError as exc:
        NOTES.append(f"file isolation incomplete: {exc}")
        return False
    NOTES.append(f"files isolated: {hidden} private paths hidden, filesystem read-only, "
                 f"private /tmp and working copy ({tmp_mb} MB)"
                 + (f"; {len(kept)} folders of the real /tmp bound in read-only" if kept else ""))
    return True


def _real_root() -> bool:
    try:
        with open("/proc/self/uid_map") as fh:
            first = fh.read().split()
        return os.getuid() == 0 and first[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


def drop_privileges(uid: int, chown: list[str]) -> bool:
    """Become a throw-away uid (root only): the grader's files are no longer the kernel's to write."""
    if not uid or not _real_root():
        NOTES.append("still running as the grader's user (not root, or in a user namespace): "
                     "files are protected only by the mounts above and RLIMIT_NPROC is not applied")
        return False
    for top in chown:
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(folder, d))]  # never a bound-in folder
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                try:
                    os.lchown(name, uid, uid)
                except OSError:
                    pass
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    NOTES.append(f"running as uid {uid}")
    return True


def apply_limits(policy: dict, dropped: bool) -> None:
    """Resource limits: address space, file size, processes+threads (only once off root), no core files."""
    mb = 1024 * 1024
    limits = [(resource.RLIMIT_AS, int(policy.get("memory_mb", 8192)) * mb),
              (resource.RLIMIT_FSIZE, int(policy.get("fsize_mb", 64)) * mb),
              (resource.RLIMIT_CORE, 0)]
    if dropped:
        limits.append((resource.RLIMIT_NPROC, int(policy.get("nproc", 2048))))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:
            NOTES.append(f"rlimit {which} not set: {exc}")
    NOTES.append(f"limits: memory {policy.get('memory_mb', 8192)} MB, files {policy.get('fsize_mb', 64)} MB"
                 + (f", {policy.get('nproc', 2048)} processes+threads" if dropped else ""))


ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED", "NBGRADER_EXECUTION", "SPARKCOURSE_PROFILE",
            "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM", "VIRTUAL_ENV", "PYTHONPATH",
            "JPY_SESSION_NAME")


def clean_environment(home: str) -> None:
    """Only harmless variables reach the submission (no tokens or secrets of the grader's environment)."""
    keep = {k: v for k, v in os.environ.items() if k in ENV_KEEP}
    os.environ.clear()
    os.environ.update(keep, HOME=home, TMPDIR="/tmp", MPLCONFIGDIR=os.path.join(home, ".mpl"))


# ---- Python-level guards ------------------------------------------------------------------------------------

class Guard:
    """Who may touch ``sparkcourse.reference``: locked cells and library code, never code the student wrote."""

    def __init__(self, trusted_dirs: list[str]):
        self.student_running = False
        self.locked_files: set[str] = set()
        self.forged: set[str] = set()  # file names given to code that student code compiled itself
        self.trusted_dirs = tuple(sorted({os.path.join(os.path.realpath(d), "") for d in trusted_dirs if d}))

    def trusted_file(self, filename: str) -> bool:
        if filename in self.forged:
            return False
        if filename in self.locked_files or filename.startswith("<frozen "):
            return True
        return filename.startswith(self.trusted_dirs)

    def blocked(self, skip: int = 1) -> bool:
        """True while a student cell runs, or if any frame on the stack is student code."""
        if self.student_running:
            return True
        frame = sys._getframe(skip)
        while frame is not None:
            if not self.trusted_file(frame.f_code.co_filename):
                return True
            frame = frame.f_back
        return False

    def audit(self, event: str, args) -> None:
        """Remember file names that student code gives to code it compiles (a forged library path)."""
        if event in ("compile", "code.__new__") and len(args) > 1 and isinstance(args[1], str):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith("<frozen "):
                return  # the import system compiling a module from its own file
            if not self.trusted_file(caller.f_code.co_filename) and not args[1].startswith("<frozen "):
                self.forged.add(args[1])


GUARD: Guard | None = None


def _refuse(name: str):
    raise ImportError(f"{name}: the course's reference solutions are not available to submissions")


def _targets_reference(name: str, fromlist, level: int, globals_) -> bool:
    if level:
        package = (globals_ or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    names = [name, *(f"{name}.{item}" for item in (fromlist or ()) if isinstance(item, str))]
    return any(n == REFERENCE or n.startswith(REFERENCE + ".") for n in names)


def _guarded_import(original):
    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - builtins' signature
        if GUARD is not None and _targets_reference(name, fromlist, level, globals) and GUARD.blocked(2):
            _refuse(name)
        return original(name, globals, locals, fromlist, level)

    return __import__


def _guard_function(fn, modname):
    def guarded(*args, **kwargs):
        if GUARD is not None and GUARD.blocked(2):
            raise RuntimeError(f"{modname}.{fn.__name__}: the course's reference solutions are not available "
                               "to submissions")
        return fn(*args, **kwargs)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(guarded, attr, getattr(fn, attr, None))
    return guarded


class ReferenceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``sparkcourse.reference`` from sources read before the folder was hidden; refuses student code."""

    def __init__(self, sources: dict[str, tuple[str, str, bool]]):
        self.sources = sources  # module name -> (source, original file name, is package)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != REFERENCE and not fullname.startswith(REFERENCE + "."):
            return None
        if GUARD is not None and GUARD.blocked(2):
            _refuse(fullname)
        if fullname not in self.sources:
            return None
        _, filename, is_pkg = self.sources[fullname]
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=filename, is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = [os.path.dirname(filename)]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source, filename, _ = self.sources[module.__name__]
        module.__file__ = filename
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - the course's own reference code
        for key, value in list(module.__dict__.items()):
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                module.__dict__[key] = _guard_function(value, module.__name__)


def read_reference_sources() -> tuple[dict[str, tuple[str, str, bool]], str | None]:
    """Every module of ``sparkcourse.reference`` as text, read while its folder is still visible."""
    import importlib.util

    spec = importlib.util.find_spec("sparkcourse")
    if spec is None or not spec.submodule_search_locations:
        return {}, None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "reference")
    sources = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)[:-3].replace(os.sep, ".")
            is_pkg = rel.endswith("__init__") or rel == "__init__"
            mod = REFERENCE if rel == "__init__" else REFERENCE + "." + rel.removesuffix(".__init__")
            with open(path) as fh:
                sources[mod] = (fh.read(), path, is_pkg)
    return sources, folder


def _is_reference(obj) -> bool:
    if isinstance(obj, types.ModuleType):
        return obj.__name__ == REFERENCE or obj.__name__.startswith(REFERENCE + ".")
    mod = getattr(obj, "__module__", None)
    return isinstance(mod, str) and (mod == REFERENCE or mod.startswith(REFERENCE + "."))


TRUSTED_MODULES = ("sparkcourse", "math", "cmath", "operator", "functools", "numpy", "torch", "random",
                   "inspect", "types", "re", "json", "statistics", "fractions", "decimal", "collections",
                   "itertools", "importlib", "sys", "os", "traceback", "warnings", "pytest", "unittest")


def make_kernel_class():
    """The kernel class (ipykernel is imported only here, after isolation)."""
    from ipykernel.ipkernel import IPythonKernel

    class SandboxKernel(IPythonKernel):
        """Restores what a submission may have patched before each locked cell; keeps reference objects away."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._locked = set(POLICY.get("locked", []))
            self._builtins = dict(vars(builtins))
            self._modules: dict[str, tuple[types.ModuleType, dict]] = {}
            self._protected: dict[str, object] = {}
            self._stash: dict[str, object] = {}
            self._snapshot_modules()
            sh = self.shell
            self._hooks = {name: list(getattr(sh, name)) for name in
                           ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")}
            self._events = {k: list(v) for k, v in sh.events.callbacks.items()}
            self._sys = {k: getattr(sys, k) for k in ("excepthook", "displayhook", "breakpointhook", "meta_path",
                                                      "path_hooks")}
            self._sys["meta_path"] = list(sys.meta_path)
            self._sys["path_hooks"] = list(sys.path_hooks)
            self._inst = {id(o): (o, dict(vars(o))) for o in (sh, self, sh.display_formatter, sh.displayhook)}
            self._classes = {cls: dict(vars(cls)) for obj in (sh, self) for cls in type(obj).__mro__
                             if cls.__module__.split(".")[0] in ("IPython", "ipykernel", "sparkcourse", __name__)}

        def _snapshot_modules(self):
            for name, mod in list(sys.modules.items()):
                if name in self._modules or not isinstance(mod, types.ModuleType) or _is_reference(mod):
                    continue
                if name.split(".")[0] in TRUSTED_MODULES or name == "builtins":
                    course = name.split(".")[0] == "sparkcourse"  # course constants too, not only functions
                    self._modules[name] = (mod, {k: v for k, v in list(vars(mod).items()) if callable(v)
                                                 or isinstance(v, types.ModuleType)
                                                 or (course and isinstance(v, int | float | str))})

        def _restore(self):
            """Undo monkeypatching of builtins, trusted modules, names set by locked cells and IPython hooks."""
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
            for k, v in self._stash.items():
                ns[k] = v
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
            sh = self.shell
            for name, value in self._hooks.items():
                getattr(sh, name)[:] = value
            sh.events.callbacks.clear()
            sh.events.callbacks.update({k: list(v) for k, v in self._events.items()})
            sh.custom_exceptions, sh.CustomTB = (), None
            for k, v in self._sys.items():
                if k in ("meta_path", "path_hooks"):
                    getattr(sys, k)[:] = v
                else:
                    setattr(sys, k, v)
            sys.settrace(None)
            sys.setprofile(None)
            sys.last_type = sys.last_value = sys.last_traceback = None  # a failed cell's frames keep memory
            import gc

            gc.collect()
            import threading

            threading.settrace(None)
            threading.setprofile(None)

        def _hide_reference(self):
            """After a locked cell: reference modules and objects leave sys.modules and the user namespace."""
            ns = self.shell.user_ns
            for k in [k for k, v in list(ns.items()) if not k.startswith("_") and _is_reference(v)]:
                self._stash[k] = ns.pop(k)
            for name in [n for n in sys.modules if n == REFERENCE or n.startswith(REFERENCE + ".")]:
                sys.modules.pop(name, None)
            pkg = sys.modules.get("sparkcourse")
            if pkg is not None and "reference" in vars(pkg):
                delattr(pkg, "reference")

        async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
                             **kwargs):
            locked = code_hash(code) in self._locked
            ns = self.shell.user_ns
            before: dict[str, int] = {}
            try:
                if locked:
                    self._restore()
                    GUARD.locked_files.add(self.shell.compile.get_code_name(code, code, 0))
                    before = {k: id(v) for k, v in list(ns.items())}
                else:
                    for k in self._stash:
                        ns.pop(k, None)
            except Exception as exc:  # a guard must never cost the student the cell
                sys.stderr.write(f"[sparkcourse.grading.sandbox] guard before cell: {exc!r}\n")
            GUARD.student_running = not locked
            try:
                return await super().do_execute(code, silent, store_history, user_expressions, allow_stdin,
                                                 **kwargs)
            finally:
                GUARD.student_running = False
                try:
                    self._after_cell(locked, before)
                except Exception as exc:
                    sys.stderr.write(f"[sparkcourse.grading.sandbox] guard after cell: {exc!r}\n")

        def _after_cell(self, locked, before):
            self._hide_reference()
            if locked:  # what a locked cell defined is restored before every later locked cell
                for k, v in list(self.shell.user_ns.items()):
                    if not k.startswith("_") and before.get(k) != id(v) and not _is_reference(v):
                        self._protected[k] = v
                self._snapshot_modules()
                self._builtins.update({k: v for k, v in list(vars(builtins).items()) if k not in self._builtins})

    return SandboxKernel


POLICY: dict = {}


def _unshadow_grading() -> None:
    """Importing this kernel (``sparkcourse.grading.*``) set ``sparkcourse.grading`` to the subpackage, hiding the
    function notebooks call (``sc.grading()``, in ``sparkcourse.setup``): put the function back."""
    import sparkcourse
    from sparkcourse import profile

    sparkcourse.grading = profile.grading


def main(argv: list[str] | None = None) -> None:
    """Isolate, then run the kernel."""
    global GUARD
    argv = list(sys.argv[1:] if argv is None else argv)
    POLICY.update(json.loads(os.environ.pop("SPARKCOURSE_SANDBOX", "{}") or "{}"))
    cwd = os.getcwd()
    conn = argv[argv.index("-f") + 1] if "-f" in argv else None
    conn_text = open(conn).read() if conn else None  # noqa: SIM115 - read before the mounts hide it
    sources, ref_folder = read_reference_sources()
    trusted = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(os.__file__))]
    if ref_folder:
        trusted.append(os.path.dirname(ref_folder))
    import site

    trusted += site.getsitepackages() + [site.getusersitepackages()]
    GUARD = Guard(trusted)
    hide = list(POLICY.get("hide", [])) + ([ref_folder] if ref_folder else [])
    POLICY["hide"] = hide
    isolated = isolate_files(POLICY, cwd) if POLICY.get("isolate", True) else False
    home = "/tmp/.home" if isolated else os.path.join(cwd, ".home")
    os.makedirs(home, exist_ok=True)
    if conn_text is not None:
        conn = os.path.join(home, "kernel.json")
        with open(conn, "w") as fh:
            fh.write(conn_text)
        argv[argv.index("-f") + 1] = conn
    dropped = drop_privileges(int(POLICY.get("uid", 0)), [cwd, home] if isolated else [home]) \
        if POLICY.get("isolate", True) else False
    if dropped and conn_text is not None:
        os.chmod(conn, 0o600)
    apply_limits(POLICY, dropped)
    clean_environment(home)
    import threading

    threading.stack_size(2 * 1024 * 1024)  # 2 MB stacks: a thousand simulator threads fit the memory cap
    sys.meta_path.insert(0, ReferenceFinder(sources))
    builtins.__import__ = _guarded_import(builtins.__import__)
    sys.addaudithook(GUARD.audit)
    for name in [n for n in sys.modules if n == REFERENCE or n.startswith(REFERENCE + ".")]:
        sys.modules.pop(name)
    sys.stderr.write("".join(f"[sparkcourse.grading.sandbox] {n}\n" for n in NOTES))
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)  # (stderr stays: the grader's log; the PID namespace and the
    os.dup2(devnull, 1)                         # uid sweep end stray children that hold it open)
    from ipykernel.kernelapp import IPKernelApp

    _unshadow_grading()
    IPKernelApp.launch_instance(argv=argv,
                                kernel_class=make_kernel_class())


if __name__ == "__main__":
    main()
