"""Trace a kernel's memory-access pattern in the CUDA simulator *in another process*.

On a real GPU numba cannot also run its CUDA simulator (``NUMBA_ENABLE_CUDASIM`` is read once, when numba is
imported), so :func:`sparkcourse.memtrace.trace` is out of reach there. :func:`trace_in_simulator` recovers the
kernel's Python source (``inspect.getsource`` of its ``py_func``, the same text a notebook cell holds), the globals
it uses (constants, modules, numba types, device functions it calls), and the launch arguments, and hands them to a
fresh Python process that turns the simulator on, rebuilds the kernel from that source, traces one launch and
sends the :class:`~sparkcourse.memtrace.TraceReport` back. The report is the one the grader's simulator computes
for the same launch: sector efficiency, bank conflicts, races.

Only the access pattern comes back; array contents written in the child are discarded (the caller runs the kernel
for real). Run it as ``python -m sparkcourse.simtrace IN OUT`` only through :func:`trace_in_simulator`.
"""

from __future__ import annotations

import ast
import dis
import importlib
import inspect
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_TIMEOUT_S = 120.0
_SCALARS = (bool, int, float, complex, str, bytes, type(None))


class SimTraceError(RuntimeError):
    """The kernel could not be traced in the simulator process (the message says why and what to do)."""


# ---- the parent's side ------------------------------------------------------------------------------------


def kernel_source(func: Any) -> tuple[str, str]:
    """``(source without decorators, function name)`` of a kernel's or device function's Python function.

    Decorator lines become blank lines, so line numbers within the text stay those of the original. Raises
    :class:`SimTraceError` when the source cannot be recovered (a function made by ``exec`` or typed at a plain
    ``python`` prompt).
    """
    py_func = getattr(func, "py_func", func)
    name = getattr(py_func, "__name__", repr(py_func))
    try:
        lines, _ = inspect.getsourcelines(py_func)
    except (OSError, TypeError) as exc:
        raise SimTraceError(
            f"cannot recover the source of {name!r} ({exc}); the access-pattern checks re-run it in the CUDA "
            "simulator from its source: define it with @cuda.jit in a notebook cell or a .py file, not with exec()"
        ) from exc
    text = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:  # pragma: no cover - getsource gave a fragment
        raise SimTraceError(f"the source recovered for {name!r} does not parse: {exc}") from exc
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef):
        raise SimTraceError(f"the source recovered for {name!r} is not a plain function definition")
    out = text.splitlines()
    for deco in node.decorator_list:
        for k in range(deco.lineno - 1, deco.end_lineno):  # the decorator, from its "@" line to its last
            out[k] = ""
    return "\n".join(out) + "\n", name


def _is_dispatcher(value: Any) -> bool:
    """A numba CUDA kernel or device function (GPU dispatcher or simulator kernel)."""
    return hasattr(value, "py_func") and type(value).__module__.startswith(("numba.cuda", "numba_cuda"))


def _is_device_function(value: Any) -> bool:
    if getattr(value, "_device", False):
        return True
    options = getattr(value, "targetoptions", None)
    return bool(options and options.get("device"))


def _names_used(code: types.CodeType) -> set[str]:
    """Global names the code reads (attribute names such as ``cuda.grid``'s ``grid`` are not globals)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _global_spec(name: str, value: Any, seen: dict[int, dict]) -> tuple:
    """How the child rebuilds global ``name``: a constant, a module, an importable object, or another function."""
    if isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(isinstance(v, _SCALARS) for v in value)):
        return ("value", value)
    if isinstance(value, np.ndarray | np.generic | np.dtype):
        return ("value", value)
    if isinstance(value, types.ModuleType):
        if value is sys.modules.get("numba.cuda"):  # whatever package provides it (numba-cuda or numba)
            return ("module", "numba.cuda")
        return ("module", value.__name__)
    try:
        import numba
        from numba.core import types as nbtypes

        if isinstance(value, nbtypes.Type) and getattr(numba, str(value), None) == value:
            return ("attr", "numba", str(value))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    if _is_dispatcher(value):
        return ("function", _function_spec(value, seen), _is_device_function(value))
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if obj is value:
                return ("attr", module, qualname)
        except (ImportError, AttributeError):
            pass
    if isinstance(value, types.FunctionType):  # a plain Python helper: sent as source, compiled as a device function
        return ("function", _function_spec(value, seen), True)
    raise SimTraceError(f"the kernel uses the global {name!r} ({type(value).__name__}), which cannot be sent to the "
                        "simulator process: use a number, a tuple of numbers, a module or a @cuda.jit function")


def _function_spec(func: Any, seen: dict[int, dict]) -> dict:
    """Source, name and globals of a kernel or device function, recursively (each function sent once)."""
    key = id(func)
    if key in seen:
        return seen[key]
    source, name = kernel_source(func)
    py_func = getattr(func, "py_func", func)
    if py_func.__code__.co_freevars:
        raise SimTraceError(f"{name!r} uses variables of an enclosing function ({', '.join(py_func.__code__.co_freevars)});"
                            " define it at the top level of a cell so it can be re-run in the simulator")
    spec: dict[str, Any] = {"name": name, "source": source, "filename": py_func.__code__.co_filename,
                            "firstline": py_func.__code__.co_firstlineno, "globals": {}}
    seen[key] = spec
    scope = py_func.__globals__
    for used in sorted(_names_used(py_func.__code__)):
        if used in scope:  # else a builtin (range, min), or a name error the simulator will report
            spec["globals"][used] = _global_spec(used, scope[used], seen)
    return spec


def _argument(value: Any) -> tuple:
    """A launch argument as the child needs it; views keep their offset into the allocation that owns them."""
    if hasattr(value, "copy_to_host") and not isinstance(value, np.ndarray):  # a device array
        value = value.copy_to_host()
    if isinstance(value, np.ndarray):
        root = value
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root is not value and root.flags.c_contiguous:
            offset = value.__array_interface__["data"][0] - root.__array_interface__["data"][0]
            return ("view", np.ascontiguousarray(root), offset, value.shape, value.strides, value.dtype.str)
        return ("array", np.array(value, order="K"))
    if isinstance(value, _SCALARS) or isinstance(value, np.generic):
        return ("value", value)
    raise SimTraceError(f"a launch argument of type {type(value).__name__} cannot be sent to the simulator process")


def trace_in_simulator(kernel: Any, griddim: Any, blockdim: Any, *args: Any,
                       timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """Trace ``kernel[griddim, blockdim](*args)`` in the CUDA simulator in a child process; return its TraceReport.

    Works whether or not this process simulates CUDA. Errors: :class:`SimTraceError` with the reason (source
    not recoverable, an unsendable global, the kernel raising in the simulator — e.g. an ``IndexError`` for a
    missing bounds check that a GPU would not report — or the time limit).
    """
    spec = _function_spec(kernel, {})
    if _is_device_function(kernel):
        raise SimTraceError(f"{spec['name']!r} is a device function (device=True): launch a kernel")
    job = {"kernel": spec, "griddim": griddim, "blockdim": blockdim, "args": [_argument(a) for a in args]}
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="simtrace-") as tmp:
        job_path, out_path = Path(tmp, "job.pkl"), Path(tmp, "report.pkl")
        job_path.write_bytes(pickle.dumps(job))
        try:
            proc = subprocess.run([sys.executable, "-m", "sparkcourse.simtrace", str(job_path), str(out_path)],
                                  env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise SimTraceError(f"tracing {spec['name']!r} in the CUDA simulator took more than {timeout:.0f} s "
                                "(the simulator runs every thread in Python: keep test launches small)") from exc
        if not out_path.exists():
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            raise SimTraceError(f"the simulator process for {spec['name']!r} died (exit {proc.returncode}):\n{tail}")
        status, payload = pickle.loads(out_path.read_bytes())
    if status != "ok":
        raise SimTraceError(f"{spec['name']!r} failed in the CUDA simulator (where it is graded): {payload}")
    return payload


# ---- the child's side -------------------------------------------------------------------------------------


def _build(spec: dict, namespace_cache: dict[int, Any], device: bool, cuda: Any, tmp: Path) -> Any:
    key = id(spec)
    if key in namespace_cache:
        return namespace_cache[key]
    scope: dict[str, Any] = {"__name__": f"simtrace_{spec['name']}", "__builtins__": __builtins__}
    path = tmp / f"{len(namespace_cache)}_{spec['name']}.py"
    # Keep the original line numbers: the tracer keys shared arrays by line and names them from the text.
    path.write_text("\n" * (spec["firstline"] - 1) + spec["source"])
    code = compile(path.read_text(), str(path), "exec")
    exec(code, scope)  # the kernel's own source, from the parent (the student's process)
    func = scope[spec["name"]]
    compiled = cuda.jit(device=True)(func) if device else cuda.jit(func)
    namespace_cache[key] = compiled
    for gname, gspec in spec["globals"].items():
        what = gspec[0]
        if what == "value":
            scope[gname] = gspec[1]
        elif what == "module":
            scope[gname] = importlib.import_module(gspec[1])
        elif what == "attr":
            obj: Any = importlib.import_module(gspec[1])
            for part in gspec[2].split("."):
                obj = getattr(obj, part)
            scope[gname] = obj
        elif what == "function":
            scope[gname] = _build(gspec[1], namespace_cache, gspec[2], cuda, tmp)
    return compiled


def _rebuild_argument(arg: tuple) -> Any:
    if arg[0] == "view":
        _, root, offset, shape, strides, dtype = arg
        return np.ndarray(shape, dtype=np.dtype(dtype), buffer=root, offset=offset, strides=strides)
    return arg[1]


def _child(job_path: str, out_path: str) -> int:
    from sparkcourse.gpu import setup_numba

    setup_numba(force_simulator=True)
    from numba import cuda

    from sparkcourse.memtrace import trace

    job = pickle.loads(Path(job_path).read_bytes())
    try:
        with tempfile.TemporaryDirectory(prefix="simtrace-src-") as tmp:
            kernel = _build(job["kernel"], {}, False, cuda, Path(tmp))
            args = [_rebuild_argument(a) for a in job["args"]]
            result: tuple = ("ok", trace(kernel, job["griddim"], job["blockdim"], *args))
    except Exception as exc:  # reported to the parent with the kernel's own error
        result = ("error", f"{type(exc).__name__}: {exc}")
    Path(out_path).write_bytes(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:3]))
