"""Assertion helpers for notebook test cells: clear messages that say what is wrong, not the answer."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


class CheckFailed(AssertionError):
    """A test-cell check failed; the message explains what to look at."""


def _as_array(x, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if x is None:
        raise CheckFailed(f"{what} is None: did the function forget to return a value?")
    return np.asarray(x)


def check_close(actual, expected, rtol: float = 1e-6, atol: float = 0.0, name: str = "result") -> None:
    """Arrays or numbers equal within tolerances; on failure name the shape, dtype or first differing index."""
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        check_number(actual, expected, rtol=rtol, atol=atol, name=name)
        return
    a, e = _as_array(actual, name), _as_array(expected, "expected")
    if a.shape != e.shape:
        raise CheckFailed(f"{name} has shape {a.shape}, expected {e.shape}")
    if a.dtype.kind not in "fciub" or e.dtype.kind not in "fciub":
        raise CheckFailed(f"{name} has dtype {a.dtype}; expected numbers")
    a64, e64 = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64), e.astype(np.float64)
    bad = ~np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = idx if len(idx) != 1 else idx[0]
        raise CheckFailed(
            f"{name} differs at {int(bad.sum())} of {bad.size} positions; first at index {where}: "
            f"got {a64[idx]!r}, expected {e64[idx]!r} (rtol={rtol}, atol={atol})"
        )


def check_number(actual, expected: float, rtol: float = 1e-6, atol: float = 0.0, name: str = "result") -> None:
    """A scalar close to ``expected``; the message gives the ratio, which exposes unit mistakes (×8, ×2, ×1000)."""
    if actual is None:
        raise CheckFailed(f"{name} is None: did the function forget to return a value?")
    try:
        value = float(actual)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{name} should be a number, got {type(actual).__name__}") from exc
    if math.isnan(value) or not math.isclose(value, expected, rel_tol=rtol, abs_tol=atol):
        ratio = f" (ratio to expected: {value / expected:.4g})" if expected else ""
        raise CheckFailed(f"{name} = {value!r}, expected {expected!r}{ratio}")


def check_property(condition: bool, message: str) -> None:
    """A named property holds; ``message`` says which one failed."""
    if not condition:
        raise CheckFailed(message)


def calls_into(fn: Callable, module_name: str) -> bool:
    """True if ``fn`` (or code nested in it) refers to ``module_name`` or to an object defined there.

    Hidden tests use it so an exercise is answered by the student's code, not by the course's planner.
    """
    import types

    parent, _, leaf = module_name.rpartition(".")
    glb = getattr(fn, "__globals__", {})

    def names(code: types.CodeType) -> set[str]:
        out = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                out |= names(const)
        return out

    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    used = names(code)
    scope = dict(glb)
    for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False):
        try:
            scope[var] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    used |= set(code.co_freevars)
    if any(n == module_name or n.startswith(module_name + ".") for n in used):
        return True  # an import inside the function: `from sparkcourse.capacity import x`, `import a.b as c`
    if parent and parent in used and leaf in used:
        return True  # `from sparkcourse import capacity` inside the function
    for name in used:
        obj = scope.get(name)
        if obj is None:
            continue
        if isinstance(obj, types.ModuleType):
            if obj.__name__ == module_name or (obj.__name__ == parent and leaf in used):
                return True
        elif getattr(obj, "__module__", None) == module_name:
            return True
    return False
