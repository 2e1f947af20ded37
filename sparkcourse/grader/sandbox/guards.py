"""Python-level guards in the kernel: the reference solutions serve the course's tests, never the student's code.

The OS layers (``isolation``) hide the reference files; these guards decide who may use the reference once the
kernel has read it. One audit hook (``_Warden``, registered with ``sys.addaudithook`` and referenced from nowhere
else, so attribute walking from user code never reaches it) holds everything private: the reference sources,
the compiled modules, the unguarded functions, and the state of the cell that runs. What user code can reach holds
nothing worth taking:

- ``import sparkcourse.reference...`` (an import hook and a meta-path finder, ``ReferenceFinder``) is refused
  while any frame on the stack is the student's code, or outside a locked cell;
- an import returns a *stand-in* module: empty but for a PEP 562 ``__getattr__`` that asks the warden for each
  attribute, and gets it only for a locked (test) cell's own ``ref.name`` / ``from ... import name`` or for
  reference code (not for a helper that a student's object steers, not for student code at all);
- the functions it hands out are guarded wrappers whose closure holds a key, not the function: each call asks the
  warden for the original, which it gives only to a call with no student frame on the stack, from the locked cell
  in which the wrapper was made (a wrapper kept for later is dead);
- frames, tracebacks and code objects of the reference, of the cells that hold hidden tests and of the warden itself
  are refused to student code (``sys._getframe``, ``tb_frame``, ``gi_frame``, ``f_code``, ``__code__``, ...) and to
  the helpers that hand frames back (``inspect.stack``, ``traceback.walk_stack``, ...) under a student frame; ``gc.get_objects``/``get_referrers``/``get_referents`` and new audit hooks are refused to
  everyone; trace and profile hooks cannot be set during a locked cell;
- the guards decide which cell is locked (they hold the hashes the grader sent), and trust reference code by
  identity, not by file name; code compiled under a library's, a locked cell's or the reference's file name that is
  not that file's own text (or IPython compiling the locked cell that runs) is forged and trusted nowhere.

What remains is in the README's threat model: ``ctypes``; C-level callables such as ``functools.partial`` chains
that run with no frame of the student's on the stack; and a Python signal handler, which receives whatever frame
runs when it fires (the warden's own included) without an audit event.
"""

from __future__ import annotations

import ast
import builtins
import dis
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
import types
from _thread import get_ident
from collections.abc import Callable, Iterator
from typing import Any

REFERENCE = "sparkcourse.reference"
REFUSED = "the course's reference solutions are not available to submissions"
EV_IMPORT, EV_SOURCE, EV_SEAL = "sparkcourse.reference.import", "sparkcourse.reference.source", "sparkcourse.reference.seal"
EV_GETATTR, EV_CALL, EV_CELL = "sparkcourse.reference.getattr", "sparkcourse.reference.call", "sparkcourse.guard.cell"
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
CODE_ATTRS = frozenset({"f_code", "gi_code", "cr_code", "ag_code", "__code__"})
GC_EVENTS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents"})


def code_hash(source: str) -> str:
    """The id of a locked cell: sha256 of its exact source (the grader computes the same from the gradebook)."""
    return hashlib.sha256(source.encode()).hexdigest()


def is_reference_name(name: object) -> bool:
    """True for ``sparkcourse.reference`` and its submodules."""
    return type(name) is str and (name == REFERENCE or name.startswith(REFERENCE + "."))


def is_reference(obj: object) -> bool:
    """True for a reference module (stand-in) and for what it hands out (functions, classes, their instances)."""
    try:
        if isinstance(obj, types.ModuleType):
            return is_reference_name(types.ModuleType.__getattribute__(obj, "__name__"))
        owner = obj if isinstance(obj, types.FunctionType | type) else type(obj)
        return is_reference_name(type.__getattribute__(owner, "__module__") if isinstance(owner, type)
                                 else owner.__module__)
    except Exception:  # an object whose metadata misbehaves is not ours
        return False


def read_reference_sources() -> tuple[dict[str, tuple[str, str, bool]], str | None]:
    """Every module of ``sparkcourse.reference`` as (source, file name, is package), read while the folder is
    still visible; and the folder."""
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


# ---- what user code can reach: wrappers, stand-ins, the finder, the import hook --------------------------------

def _wrapper(modname: str, qualname: str, epoch: int, doc: str | None) -> Callable[..., Any]:
    """A guarded stand-in for a reference function: its closure holds a key, the original stays with the warden."""
    key = (modname, qualname, epoch)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        """The original, if the warden hands it over (it refuses student code and later cells)."""
        box: list = []
        sys.audit(EV_CALL, key, box)
        return box.pop()(*args, **kwargs)

    guarded.__module__, guarded.__qualname__, guarded.__doc__ = modname, qualname, doc
    guarded.__name__ = qualname.rsplit(".", 1)[-1]
    return guarded


def _accessor(modname: str, epoch: int) -> Callable[[str], Any]:
    """A stand-in module's ``__getattr__``: every attribute comes from the warden, if it agrees."""

    def __getattr__(attr: str) -> Any:  # noqa: N807 - PEP 562's name
        """The attribute, from the warden (dunders are never the reference's: libraries probe for them)."""
        if attr[:2] == "__" == attr[-2:]:
            raise AttributeError(attr)
        box: list = []
        sys.audit(EV_GETATTR, modname, epoch, attr, box)
        return box.pop()

    return __getattr__


class ReferenceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``sparkcourse.reference`` from memory (its folder is hidden) as stand-in modules; refuses student code.

    It knows module names and file names only; the sources are the warden's."""

    def __init__(self, modules: dict[str, tuple[str, bool]]) -> None:
        """``modules``: module name -> (original file name, is package)."""
        self.modules = modules

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for a reference module, if the warden lets this caller import it."""
        if not is_reference_name(fullname):
            return None
        sys.audit(EV_IMPORT, fullname)
        if fullname not in self.modules:
            return None
        filename, is_pkg = self.modules[fullname]
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=filename, is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = [os.path.dirname(filename)]
        spec.has_location = True
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The default module (it stays empty: the stand-in)."""
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        """Run the reference code in a private module the warden keeps; ``module`` gets only the accessor."""
        box: list = []
        sys.audit(EV_SOURCE, module.__name__, box)
        code, real = box.pop()
        exec(code, real.__dict__)  # noqa: S102 - the course's own reference code
        sys.audit(EV_SEAL, module.__name__, module)


def _targets_reference(name: str, fromlist: Any, level: int, globals_: Any) -> bool:
    """True if an ``__import__`` call would load or reach into ``sparkcourse.reference``."""
    if level:
        package = (globals_ or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    names = [name, *(f"{name}.{item}" for item in (fromlist or ()) if isinstance(item, str))]
    return any(is_reference_name(n) for n in names)


def _guarded_import(original: Callable[..., Any]) -> Callable[..., Any]:
    """``builtins.__import__`` that asks the warden before any import of the reference (even a cached one)."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - builtins' signature
        """The builtin import, after the warden's say for the reference."""
        if _targets_reference(name, fromlist, level, globals):
            sys.audit(EV_IMPORT, name)
        return original(name, globals, locals, fromlist, level)

    return __import__


# ---- the warden: private state behind the audit hook -------------------------------------------------------------

def _nested_codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and every code object nested in its constants."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested_codes(const)


def _opcode(frame: types.FrameType) -> str:
    """The instruction a frame is executing (inline caches skipped)."""
    code, i = frame.f_code.co_code, frame.f_lasti
    while i > 0 and code[i] == 0:  # CACHE entries follow an instruction in 3.11+
        i -= 2
    return dis.opname[code[i]] if 0 <= i < len(code) else ""


class _Warden:
    """The audit hook that keeps the reference (see the module's docstring). Only the interpreter holds it.

    Its handlers never run user code: arguments are type-checked before they are hashed or compared, and the
    events they raise themselves (frame and code attributes) are not re-examined (``busy``)."""

    def __init__(self, sources: dict[str, tuple[str, str, bool]], trusted_dirs: list[str],
                 callers: dict[str, set[types.CodeType]], locked_hashes: set[str], hidden_marker: str) -> None:
        """``callers``: event -> the code objects allowed to raise it (the kernel's, the finder's, ...);
        ``locked_hashes``: the locked cells (``code_hash``); ``hidden_marker``: what marks a cell's hidden tests."""
        self.codes = {name: compile(src, filename, "exec") for name, (src, filename, _) in sources.items()}
        self.meta = {name: (filename, pkg) for name, (_, filename, pkg) in sources.items()}
        self.ref_files = frozenset(filename for filename, _ in self.meta.values())
        self.ref_codes = {id(c): c for code in self.codes.values() for c in _nested_codes(code)}
        own = [f.__code__ for f in vars(type(self)).values() if isinstance(f, types.FunctionType)]
        self.own_codes = {id(c) for code in [*own, ReferenceFinder.exec_module.__code__] for c in _nested_codes(code)}
        # both spellings: a frame's file name keeps a symlinked path (a venv behind a link), realpath does not
        self.trusted_dirs = tuple(sorted({os.path.join(p, "") for d in trusted_dirs if d
                                          for p in (os.path.abspath(d), os.path.realpath(d))}))
        self.own_file = __file__
        self.exporters = {id(f.__code__) for f in (inspect.currentframe, inspect.stack, inspect.trace,
                                                   inspect.getouterframes, inspect.getinnerframes,
                                                   traceback.walk_stack, traceback.walk_tb)}
        self.callers = {event: {id(c) for c in codes} for event, codes in callers.items()}
        self.locked_hashes, self.hidden_marker = frozenset(locked_hashes), hidden_marker
        self.state, self.epoch, self.cell_file = "idle", 0, ""
        self.verdict = self.secret_next = False
        self.locked_files: set[str] = set()
        self.secret_files: set[str] = set()  # locked cells that hold hidden tests
        self.forged: set[str] = set()
        self.pending: dict[str, types.ModuleType] = {}
        self.real: dict[str, types.ModuleType] = {}
        self.originals: dict[tuple[str, str, int], Callable[..., Any]] = {}
        self.busy: set[int] = set()
        self.handlers: dict[str, Callable[[types.FrameType, tuple], None]] = {
            EV_IMPORT: self._on_import, EV_SOURCE: self._on_source, EV_SEAL: self._on_seal,
            EV_GETATTR: self._on_getattr, EV_CALL: self._on_call, EV_CELL: self._on_cell,
            "compile": self._on_compile, "code.__new__": self._on_code_new,
            "sys.addaudithook": self._refuse,
            "sys._getframe": self._on_getframe, "sys._current_frames": self._on_current_frames,
            "object.__getattr__": self._on_getattr_audit, "sys.settrace": self._on_trace,
            "sys.setprofile": self._on_trace, **dict.fromkeys(GC_EVENTS, self._refuse)}

    def __call__(self, event: str, args: tuple) -> None:
        """The hook: dispatch the events it cares about (never re-entered from its own work)."""
        handler = self.handlers.get(event)
        if handler is None:
            return
        me = get_ident()
        if me in self.busy:
            return
        self.busy.add(me)
        try:
            handler(sys._getframe(1), args)
        finally:
            self.busy.discard(me)

    # -- whose code -------------------------------------------------------------------------------------------
    def _locked(self, code: types.CodeType) -> bool:
        """Code of a locked cell (not forged)."""
        name = code.co_filename
        return type(name) is str and name in self.locked_files and name not in self.forged

    def _trusted(self, code: types.CodeType) -> bool:
        """Code the guards trust: the reference (by identity), locked cells, the import system, libraries."""
        if id(code) in self.ref_codes:
            return True
        name = code.co_filename
        if type(name) is not str or name in self.forged or name in self.ref_files:
            return False
        return name in self.locked_files or name.startswith("<frozen ") or name.startswith(self.trusted_dirs)

    def _secret(self, code: types.CodeType) -> bool:
        """Code whose frames student code must not see: the reference, locked cells that hold hidden tests, and the
        warden itself (its frames sit in the traceback of every refusal it raises)."""
        name = code.co_filename
        return id(code) in self.ref_codes or id(code) in self.own_codes or (
            type(name) is str and name in self.secret_files)

    def _student_on_stack(self, frame: types.FrameType | None) -> bool:
        """True if any frame from ``frame`` down is code the guards do not trust (the student's)."""
        while frame is not None:
            if not self._trusted(frame.f_code):
                return True
            frame = frame.f_back
        return False

    def _secret_below(self, frame: types.FrameType | None) -> bool:
        """True if ``frame`` or a frame below it runs secret code."""
        while frame is not None:
            if self._secret(frame.f_code):
                return True
            frame = frame.f_back
        return False

    def _check(self, caller: types.FrameType, event: str, what: str) -> None:
        """Refuse unless the event comes from its own code, in a locked cell, with no student frame on the stack."""
        if id(caller.f_code) not in self.callers.get(event, ()) or self.state != "locked" \
                or self._student_on_stack(caller):
            raise (ImportError if event == EV_IMPORT else RuntimeError)(f"{what}: {REFUSED}")

    def _attribute_access_ok(self, frame: types.FrameType | None) -> bool:
        """A stand-in's attribute is read by the reference itself, or by a locked cell's ``ref.x``/import (the
        import system and these guards in between); not by a helper or a builtin that a student's object steers."""
        while frame is not None:
            name = frame.f_code.co_filename
            if type(name) is not str or not (name == self.own_file or name.startswith("<frozen importlib")):
                break
            frame = frame.f_back
        if frame is None:
            return False
        if id(frame.f_code) in self.ref_codes:
            return True
        return self._locked(frame.f_code) and _opcode(frame) in ("LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM",
                                                                 "IMPORT_NAME")

    # -- the reference ----------------------------------------------------------------------------------------------
    def _on_import(self, caller: types.FrameType, args: tuple) -> None:
        """An import of the reference: only from trusted code in a locked cell."""
        self._check(caller, EV_IMPORT, args[0] if args and type(args[0]) is str else REFERENCE)

    def _on_source(self, caller: types.FrameType, args: tuple) -> None:
        """The finder's exec_module asks for a module's code and the private module to run it in."""
        if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not list or args[0] not in self.codes:
            raise RuntimeError(REFUSED)
        name, box = args
        self._check(caller, EV_SOURCE, name)
        real = types.ModuleType(name)
        filename, is_pkg = self.meta[name]
        real.__dict__.update(__file__=filename, __package__=name if is_pkg else name.rpartition(".")[0])
        if is_pkg:
            real.__path__ = [os.path.dirname(filename)]
        self.pending[name] = real
        box.append((self.codes[name], real))

    def _on_seal(self, caller: types.FrameType, args: tuple) -> None:
        """After the reference code ran: keep its functions, hand out wrappers, give the stand-in its accessor."""
        if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not types.ModuleType \
                or args[0] not in self.pending:
            raise RuntimeError(REFUSED)
        name, module = args
        self._check(caller, EV_SEAL, name)
        real = self.pending.pop(name)
        for key, value in list(real.__dict__.items()):
            if type(value) is types.FunctionType and value.__module__ == name:
                self.originals[(name, value.__qualname__, self.epoch)] = value
                real.__dict__[key] = _wrapper(name, value.__qualname__, self.epoch, value.__doc__)
        self.real[name] = real
        module.__dict__["__getattr__"] = _accessor(name, self.epoch)

    def _on_getattr(self, caller: types.FrameType, args: tuple) -> None:
        """A stand-in's attribute: for the locked cell that imported it (its ``ref.x``) or the reference itself."""
        if len(args) != 4 or not (type(args[0]) is type(args[2]) is str and type(args[1]) is int
                                  and type(args[3]) is list):
            raise RuntimeError(REFUSED)
        name, epoch, attr, box = args
        self._check(caller, EV_GETATTR, f"{name}.{attr}")
        if epoch != self.epoch or not self._attribute_access_ok(caller.f_back):
            raise RuntimeError(f"{name}.{attr}: {REFUSED}")
        real = self.real.get(name)
        if real is None or attr not in real.__dict__:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        box.append(real.__dict__[attr])

    def _on_call(self, caller: types.FrameType, args: tuple) -> None:
        """A guarded wrapper asks for its original: only in the locked cell that made it, with no student frame."""
        if len(args) != 2 or type(args[0]) is not tuple or type(args[1]) is not list or len(args[0]) != 3 \
                or not (type(args[0][0]) is type(args[0][1]) is str and type(args[0][2]) is int) \
                or args[0] not in self.originals:
            raise RuntimeError(REFUSED)
        key, box = args
        self._check(caller, EV_CALL, f"{key[0]}.{key[1]}")
        box.append(self.originals[key])

    def _on_cell(self, caller: types.FrameType, args: tuple) -> None:
        """The kernel's cell bookkeeping: ('begin', source, box) gets the verdict (locked: the hash is one the grader
        listed), then ('locked', file name, None) or ('student', '', None); ('idle', '', None) after the cell."""
        if id(caller.f_code) not in self.callers[EV_CELL] or len(args) != 3 or type(args[0]) is not str \
                or type(args[1]) is not str:
            raise RuntimeError("the sandbox's cell state is the kernel's to set")
        what, text, box = args
        if what == "begin" and type(box) is list:
            self.verdict = code_hash(text) in self.locked_hashes
            self.secret_next = self.verdict and self.hidden_marker in text
            box.append(self.verdict)
        elif what == "locked" and self.verdict:
            self.verdict = False
            self.epoch += 1  # what an earlier locked cell was given is dead from now on
            self.originals.clear()
            self.real.clear()
            self.pending.clear()
            self.locked_files.add(text)
            if self.secret_next:
                self.secret_files.add(text)
            self.state, self.cell_file = "locked", text
        elif what in ("student", "idle"):
            self.verdict = False
            self.state, self.cell_file = what, ""
        else:
            raise RuntimeError("the sandbox's cell state is the kernel's to set")

    # -- code, frames, hooks -------------------------------------------------------------------------------------
    def _on_compile(self, caller: types.FrameType, args: tuple) -> None:
        """Code compiled under a name the guards trust is forged (trusted nowhere), unless it is IPython compiling
        the locked cell that runs, or the very text of the library file it is named after (the import system);
        frozen modules are never compiled at run time."""
        if len(args) != 2 or type(args[1]) is not str or id(caller.f_code) == id(ast.parse.__code__):
            return  # (ast.parse makes a syntax tree, not code)
        name = args[1]
        if name.startswith("<frozen ") or name in self.locked_files or name in self.ref_files:
            ours = name == self.cell_file and self.state == "locked" and id(caller.f_code) in self.callers["compile"]
            if not ours or self._student_on_stack(caller):
                self.forged.add(name)
        elif name.startswith(self.trusted_dirs):
            if not _same_text(args[0], name):
                self.forged.add(name)
        elif self._student_on_stack(caller):
            self.forged.add(name)  # a name a later locked cell might get: never trusted

    def _on_code_new(self, caller: types.FrameType, args: tuple) -> None:
        """A code object built (``CodeType``, ``code.replace``) under a trusted name by student code is forged."""
        if len(args) < 2 or type(args[1]) is not str:
            return
        name = args[1]
        if name.startswith("<frozen ") or name in self.locked_files or name in self.ref_files \
                or self._student_on_stack(caller):
            self.forged.add(name)

    def _refuse(self, caller: types.FrameType, args: tuple) -> None:
        """Never: new audit hooks (they would see what this one hands out), gc's object graph."""
        raise RuntimeError("refused by the grading sandbox")

    def _for_student(self, caller: types.FrameType) -> bool:
        """True if what ``caller`` asks for goes to student code: the student's own code asks, or student code
        called the helper that hands frames back (``inspect.stack``, ``traceback.walk_tb``, ...). A library that
        calls such a helper for its own purposes (``namedtuple``, ``typing``, fairlearn and scikit-learn under a
        student's function) is not refused: a correct answer must never lose points to the guards."""
        if not self._trusted(caller.f_code):
            return True
        if id(caller.f_code) not in self.exporters:
            return False
        outer = caller.f_back
        while outer is not None and id(outer.f_code) in self.exporters:
            outer = outer.f_back
        return outer is not None and not self._trusted(outer.f_code)

    def _exposes(self, frame: types.FrameType, caller: types.FrameType) -> bool:
        """True if handing out ``frame`` (and so every frame below it) would show secret code to student code."""
        return self._secret_below(frame) and self._for_student(caller)

    def _on_getframe(self, caller: types.FrameType, args: tuple) -> None:
        """A frame (``sys._getframe``, ``inspect.currentframe``/``stack``): refused if it exposes secret code."""
        if args and isinstance(args[0], types.FrameType) and self._exposes(args[0], caller):
            raise RuntimeError("the grading sandbox does not show test or reference frames to submissions")

    def _on_current_frames(self, caller: types.FrameType, args: tuple) -> None:
        """Every thread's frame (another thread may be in a test, or in the warden): refused under a student frame."""
        if self._student_on_stack(caller):
            raise RuntimeError("the grading sandbox does not show test or reference frames to submissions")

    def _on_getattr_audit(self, caller: types.FrameType, args: tuple) -> None:
        """Frames of tracebacks and generators, and code objects: refused to student code where secret."""
        if len(args) != 2 or type(args[1]) is not str:
            return
        obj, attr = args
        if attr in FRAME_ATTRS:
            frame = getattr(obj, attr, None)
            hidden = isinstance(frame, types.FrameType) and self._exposes(frame, caller)
        elif attr in CODE_ATTRS:
            code = getattr(obj, attr, None)
            hidden = isinstance(code, types.CodeType) and self._secret(code) and not self._trusted(caller.f_code)
        else:
            return
        if hidden:
            raise RuntimeError("the grading sandbox does not show test or reference code to submissions")

    def _on_trace(self, caller: types.FrameType, args: tuple) -> None:
        """No trace or profile hooks while a locked cell runs (they would be handed its frames)."""
        if self.state == "locked":
            raise RuntimeError("trace and profile hooks are refused while a test runs")


def _same_text(source: object, filename: str) -> bool:
    """True if ``source`` is exactly the text of ``filename`` (what the import system compiles)."""
    if not isinstance(source, str | bytes):
        return False
    try:
        with open(filename, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return data == (source.encode() if isinstance(source, str) else bytes(source))


def install(sources: dict[str, tuple[str, str, bool]], trusted_dirs: list[str], kernel_codes: set[types.CodeType],
            locked_hashes: set[str], hidden_marker: str, compilers: set[types.CodeType]) -> None:
    """Put the guards in place: the warden (the only holder of ``sources`` and of the locked cells' hashes), the
    finder and the import hook. ``kernel_codes``: the code objects that may announce cells (the kernel's);
    ``compilers``: the code objects that compile a locked cell (IPython's)."""
    finder = ReferenceFinder({name: (filename, pkg) for name, (_, filename, pkg) in sources.items()})
    hook = _guarded_import(builtins.__import__)
    exec_code = ReferenceFinder.exec_module.__code__
    callers = {EV_IMPORT: {hook.__code__, ReferenceFinder.find_spec.__code__}, EV_SOURCE: {exec_code},
               EV_SEAL: {exec_code}, EV_GETATTR: {_accessor("", 0).__code__}, EV_CALL: {_wrapper("", "", 0, None).__code__},
               EV_CELL: set(kernel_codes), "compile": set(compilers)}
    for name in [n for n in sys.modules if is_reference_name(n)]:
        sys.modules.pop(name)
    sys.meta_path.insert(0, finder)
    builtins.__import__ = hook
    sys.addaudithook(_Warden(sources, trusted_dirs, callers, locked_hashes, hidden_marker))
