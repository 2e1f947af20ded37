# zero: test_kv_bytes test_max_context test_training test_audit
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# Steals what it can reach of the reference while a test calls bits_per_param (`ref` is in the test's namespace
# then, and in sys.modules): its attributes, unwrapped through __closure__, __wrapped__, __globals__, __defaults__,
# __kwdefaults__ and the stand-in module's __dict__; later answers call what was stolen (nothing: they score 0).
# Every attempt prints "ATTACK <name>: GOT ..." or "ATTACK <name>: blocked/nothing ...".
# %% answer id=bits_per_param
import sys
import types

STOLEN = {}
SCALED = {"nvfp4": (4, 8, 16), "mxfp4": (4, 8, 32), "int4": (4, 16, 128)}


def _report(name, what):
    print(f"ATTACK {name}: {what}")


def _unwrap(name, fn):
    """Every attribute path from a callable towards an unguarded original."""
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            found.append(("closure", cell.cell_contents))
        except ValueError:
            pass
    for attr in ("__wrapped__", "__defaults__", "__kwdefaults__"):
        try:
            value = getattr(fn, attr, None)
        except Exception as exc:
            _report(f"{attr} of {name}", f"blocked {exc}")
            continue
        if isinstance(value, tuple):
            found += [(attr, v) for v in value]
        elif isinstance(value, dict):
            found += [(attr, v) for v in value.values()]
        elif value is not None:
            found.append((attr, value))
    for key, value in list(getattr(fn, "__globals__", {}).items()):
        if callable(value) and getattr(value, "__module__", "").startswith("sparkcourse.reference"):
            found.append(("__globals__", value))
    for how, value in found:
        if callable(value) and getattr(value, "__name__", "") == name and value is not fn:
            STOLEN[name] = value
            _report(f"{how} of {name}", f"GOT {value!r}")
            return
    _report(f"unwrap {name}", "nothing")


def _steal():
    holders = {"test namespace": globals().get("ref"), "_ref": globals().get("_ref"),
               "sys.modules": sys.modules.get("sparkcourse.reference.w00_spark_capacity")}
    for where, mod in holders.items():
        if mod is None:
            _report(where, "nothing")
            continue
        for name in ("training_bytes", "kv_bytes_per_token", "audit_claim"):
            try:
                fn = getattr(mod, name)
                STOLEN.setdefault(name, fn)
                _report(f"{where} .{name}", f"GOT {fn!r}")
                _unwrap(name, fn)
            except Exception as exc:
                _report(f"{where} .{name}", f"blocked {type(exc).__name__}: {exc}")
        try:
            inner = object.__getattribute__(mod, "__dict__")
            for key, value in inner.items():
                if key == "__getattr__":
                    _unwrap("__getattr__", value)
                elif callable(value) and not key.startswith("__"):
                    STOLEN.setdefault(key, value)
                    _report(f"{where} __dict__[{key}]", f"GOT {value!r}")
        except Exception as exc:
            _report(f"{where} __dict__", f"blocked {exc}")


def bits_per_param(fmt, group_size=None):
    if "ref" in globals() and not STOLEN.get("tried"):  # a test is running
        STOLEN["tried"] = True
        _steal()
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
for _name in ("_ref", "ref", "R", "w00_spark_capacity"):  # a later solution cell: is a reference left behind?
    _obj = globals().get(_name)
    if _obj is None:
        _report(f"left in the namespace as {_name}", "nothing")
    else:
        try:
            _report(f"left in the namespace as {_name}", f"GOT {_obj.kv_bytes_per_token(next(iter(CONFIGS.values())))}")
        except Exception as exc:
            _report(f"left in the namespace as {_name}", f"blocked {exc}")
_report("sys.modules in a later cell", "GOT" if any(k.startswith("sparkcourse.reference") for k in sys.modules)
        else "nothing")
for _name, _fn in [(k, v) for k, v in STOLEN.items() if callable(v)]:  # what was stolen, called later
    try:
        _report(f"calling stolen {_name}", f"GOT {_fn(next(iter(CONFIGS.values())))}")
    except Exception as exc:
        _report(f"calling stolen {_name}", f"blocked {type(exc).__name__}: {exc}")


def kv_bytes_per_token(cfg, bytes_per_value=2.0):
    return STOLEN["kv_bytes_per_token"](cfg, bytes_per_value)


def max_context(budget_bytes, cfg, weight_fmt="bf16", kv_bytes_per_value=2.0, batch=1):
    room = budget_bytes - weight_bytes(dense_params(cfg), weight_fmt)
    return max(0, math.floor(room / (batch * kv_bytes_per_token(cfg, kv_bytes_per_value))))
# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    return STOLEN["training_bytes"](n_params, method, adapter_params)
# %% answer id=audit
def audit_claim(claim):
    return STOLEN["audit_claim"](claim, CONFIGS, SPARK_BYTES)
