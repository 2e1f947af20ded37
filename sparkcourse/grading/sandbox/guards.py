"""Python-level guards in the kernel: ``sparkcourse.reference`` serves the course's tests, never the student's code.

The OS layers (``isolation``) hide the reference files; the kernel reads the sources before that and serves them
from memory (``ReferenceFinder``). An import hook, the finder and guarded functions refuse code the student wrote:
``Guard.blocked`` is true while a student cell runs or while any frame on the stack is student code; an audit hook
notices code that student code compiles under a library's file name (forged) and trusts it nowhere.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from typing import Any

REFERENCE = "sparkcourse.reference"


def code_hash(source: str) -> str:
    """The id of a locked cell: sha256 of its exact source (the grader computes the same from the gradebook)."""
    return hashlib.sha256(source.encode()).hexdigest()


class Guard:
    """Who may touch ``sparkcourse.reference``: locked cells and library code, never code the student wrote."""

    def __init__(self, trusted_dirs: list[str]) -> None:
        """Trust files under ``trusted_dirs`` (the Python installation and the package)."""
        self.student_running = False
        self.locked_files: set[str] = set()
        self.forged: set[str] = set()  # file names given to code that student code compiled itself
        self.trusted_dirs = tuple(sorted({os.path.join(os.path.realpath(d), "") for d in trusted_dirs if d}))

    def trusted_file(self, filename: str) -> bool:
        """True for a locked cell's or a library's file name that student code did not forge."""
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

    def audit(self, event: str, args: tuple) -> None:
        """Remember file names that student code gives to code it compiles (a forged library path)."""
        if event in ("compile", "code.__new__") and len(args) > 1 and isinstance(args[1], str):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith("<frozen "):
                return  # the import system compiling a module from its own file
            if not self.trusted_file(caller.f_code.co_filename) and not args[1].startswith("<frozen "):
                self.forged.add(args[1])


GUARD: Guard | None = None


def _refuse(name: str) -> None:
    """Refuse an import of the reference."""
    raise ImportError(f"{name}: the course's reference solutions are not available to submissions")


def _targets_reference(name: str, fromlist: Any, level: int, globals_: Any) -> bool:
    """True if an ``__import__`` call would load or reach into ``sparkcourse.reference``."""
    if level:
        package = (globals_ or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    names = [name, *(f"{name}.{item}" for item in (fromlist or ()) if isinstance(item, str))]
    return any(n == REFERENCE or n.startswith(REFERENCE + ".") for n in names)


def guarded_import(original: Callable[..., Any]) -> Callable[..., Any]:
    """``builtins.__import__`` that refuses imports of the reference from student code."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - builtins' signature
        """The builtin import, after the guard's say."""
        if GUARD is not None and _targets_reference(name, fromlist, level, globals) and GUARD.blocked(2):
            _refuse(name)
        return original(name, globals, locals, fromlist, level)

    return __import__


def _guard_function(fn: Callable[..., Any], modname: str) -> Callable[..., Any]:
    """A reference function that refuses to run for student code."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        """The reference function, unless student code calls."""
        if GUARD is not None and GUARD.blocked(2):
            raise RuntimeError(f"{modname}.{fn.__name__}: the course's reference solutions are not available "
                               "to submissions")
        return fn(*args, **kwargs)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(guarded, attr, getattr(fn, attr, None))
    return guarded


class ReferenceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``sparkcourse.reference`` from sources read before the folder was hidden; refuses student code."""

    def __init__(self, sources: dict[str, tuple[str, str, bool]]) -> None:
        """``sources``: module name -> (source, original file name, is package)."""
        self.sources = sources

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for a reference module, unless student code asks."""
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

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The default module."""
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        """Run the reference source; its functions are guarded."""
        source, filename, _ = self.sources[module.__name__]
        module.__file__ = filename
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - the course's own reference code
        for key, value in list(module.__dict__.items()):
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                module.__dict__[key] = _guard_function(value, module.__name__)


def read_reference_sources() -> tuple[dict[str, tuple[str, str, bool]], str | None]:
    """Every module of ``sparkcourse.reference`` as text, read while its folder is still visible."""
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


def is_reference(obj: object) -> bool:
    """True for a reference module and for objects defined in one."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__ == REFERENCE or obj.__name__.startswith(REFERENCE + ".")
    mod = getattr(obj, "__module__", None)
    return isinstance(mod, str) and (mod == REFERENCE or mod.startswith(REFERENCE + "."))


def install(sources: dict[str, tuple[str, str, bool]], trusted_dirs: list[str]) -> Guard:
    """The finder, the import hook and the audit hook; reference modules already loaded are dropped."""
    global GUARD
    import builtins

    GUARD = Guard(trusted_dirs)
    sys.meta_path.insert(0, ReferenceFinder(sources))
    builtins.__import__ = guarded_import(builtins.__import__)
    sys.addaudithook(GUARD.audit)
    for name in [n for n in sys.modules if n == REFERENCE or n.startswith(REFERENCE + ".")]:
        sys.modules.pop(name)
    return GUARD
