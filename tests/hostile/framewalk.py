# zero: test_kv_bytes test_max_context test_training test_audit
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# While a test calls bits_per_param: walk up to the test's frame (sys._getframe, inspect, a traceback, a running
# generator, sys._current_frames), read the hidden test's code, look for the reference through gc, set a trace
# hook and an audit hook; training_bytes returns an object whose float() asks the stand-in module for the answer
# through C-level callables only (no frame of the student's on the stack). Every attempt prints
# "ATTACK <name>: GOT ..." or "ATTACK <name>: blocked ...".
# %% answer id=bits_per_param
import functools
import gc
import inspect
import operator
import sys

STOLEN = {}
SEEN_EVENTS = []
SCALED = {"nvfp4": (4, 8, 16), "mxfp4": (4, 8, 32), "int4": (4, 16, 128)}


def _report(name, what):
    print(f"ATTACK {name}: {what}")


def _frames():
    """Ways to get a frame below this function's caller."""
    yield "sys._getframe", lambda: sys._getframe(1)
    yield "inspect.currentframe().f_back", lambda: inspect.currentframe().f_back
    yield "inspect.stack", lambda: inspect.stack()[2].frame

    def from_traceback():
        try:
            raise ValueError
        except ValueError as exc:
            return exc.__traceback__.tb_frame.f_back

    yield "traceback", from_traceback

    def running_generator():
        def gen():
            yield gen_obj.gi_frame.f_back

        gen_obj = gen()
        return next(gen_obj)

    yield "generator", running_generator
    yield "sys._current_frames", lambda: list(sys._current_frames().values())[0]


def _walk(how, frame):
    while frame is not None:
        mod = frame.f_globals.get("ref")
        if mod is not None and not isinstance(mod, dict):
            try:
                STOLEN["training_bytes"] = mod.training_bytes
                _report(how, f"GOT {mod.training_bytes!r}")
            except Exception as exc:
                _report(f"{how} -> ref.training_bytes", f"blocked {exc}")
            try:
                _report(f"{how} -> test code", f"GOT {frame.f_code.co_consts[:3]!r}")
            except Exception as exc:
                _report(f"{how} -> test code", f"blocked {exc}")
            return
        frame = frame.f_back
    _report(how, "nothing")


def _attack():
    for how, get in _frames():
        try:
            _walk(how, get())
        except Exception as exc:
            _report(how, f"blocked {type(exc).__name__}: {exc}")
    try:
        refs = [o for o in gc.get_objects() if type(o).__name__ == "_Warden"]
        _report("gc.get_objects", f"GOT {refs!r}" if refs else "nothing")
    except Exception as exc:
        _report("gc.get_objects", f"blocked {exc}")
    try:
        _report("gc.get_referrers", f"GOT {len(gc.get_referrers(globals()['ref']))} referrers")
    except Exception as exc:
        _report("gc.get_referrers", f"blocked {exc}")
    try:
        sys.settrace(lambda frame, event, arg: None)
        sys.settrace(None)
        _report("sys.settrace", "GOT a trace hook during a test")
    except Exception as exc:
        _report("sys.settrace", f"blocked {exc}")
    sys.addaudithook(lambda event, args: SEEN_EVENTS.append(event))  # refused silently (checked later)


def bits_per_param(fmt, group_size=None):
    if "ref" in globals() and not STOLEN.get("done"):  # a test is running
        STOLEN["done"] = True
        _attack()
    if fmt in ("fp32",):
        return 32.0
    if fmt in ("fp16", "bf16"):
        return 16.0
    if fmt in ("fp8", "int8"):
        return 8.0
    if fmt in SCALED:
        elem, scale, block = SCALED[fmt]
        return elem + scale / (group_size if group_size else block)
    if fmt == "nf4":
        b = group_size if group_size else 64
        return 4.0 + (8.0 + 32.0 / 256) / b
    raise ValueError(fmt)


def weight_bytes(n_params, fmt, group_size=None):
    return bits_per_param(fmt, group_size) * n_params / 8.0
# %% answer id=kv_cache
_report("audit hook", f"GOT {len(SEEN_EVENTS)} events" if SEEN_EVENTS else "blocked (never called)")
_held = []  # a refused import's traceback runs through the guards' own frames: what do they hold?
try:
    import sparkcourse.reference.w00_spark_capacity
except ImportError as _exc:
    _tb = _exc.__traceback__
    while _tb is not None:
        try:
            _held.append(type(_tb.tb_frame.f_locals.get("self")).__name__)
        except Exception:
            _held.append("refused")
        _tb = _tb.tb_next
_report("refusal traceback", f"GOT {_held}" if "_Warden" in _held else f"blocked {_held}")


def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    return STOLEN["training_bytes"](cfg, bytes_per_value)


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    room = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, math.floor(room / (batch * kv_bytes_per_token(cfg, kv_bytes_per_value))))
# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    """The honest formula for the visible tests; under the hidden ones (``ref`` imported), an object whose
    float() (which the test's check_number calls) asks the stand-in module through C-level callables only."""
    if method not in ("full", "lora", "qlora"):
        raise ValueError(method)
    if "ref" not in globals():
        table = {"full": 16 * n_params, "lora": 2 * n_params + 16 * adapter_params,
                 "qlora": n_params * bits_per_param("nf4") / 8 + 16 * adapter_params}
        return table[method]
    ask = functools.partial(operator.methodcaller("training_bytes", n_params, method, adapter_params),
                            globals()["ref"])

    class Lazy:
        __float__ = staticmethod(ask)

    return Lazy()
# %% answer id=audit
def audit_claim(claim):
    return STOLEN["audit_claim"](claim)
