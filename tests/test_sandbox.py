"""The sandbox package on its own (seconds, not the hostile battery's minutes): what its modules import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

KERNEL_MODULES = ["sparkcourse.grading.sandbox", "sparkcourse.grading.sandbox.namespaces",
                  "sparkcourse.grading.sandbox.isolation", "sparkcourse.grading.sandbox.guards",
                  "sparkcourse.grading.sandbox.kernel"]


def _imported_after(modules: list[str]) -> set[str]:
    """Top-level module names in sys.modules after importing ``modules`` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_kernel_never_imports_nbgrader():
    assert "nbgrader" not in _imported_after(KERNEL_MODULES)


def test_the_package_is_light():
    loaded = _imported_after(["sparkcourse.grading.sandbox"])
    assert not loaded & {"nbgrader", "jupyter_client", "nbclient", "ipykernel", "zmq", "IPython"}
