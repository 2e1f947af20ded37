"""The sandbox package on its own (seconds, not the hostile battery's minutes): what its modules import, and the
reference guards in one live sandbox kernel driven cell by cell (locked cells named by their hash, as the grader
does), including a test cell that imports the reference as ``_ref``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import ROOT
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager

KERNEL_MODULES = ["sparkcourse.grader.sandbox", "sparkcourse.grader.sandbox.namespaces",
                  "sparkcourse.grader.sandbox.isolation", "sparkcourse.grader.sandbox.guards",
                  "sparkcourse.grader.sandbox.kernel"]


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
    loaded = _imported_after(["sparkcourse.grader.sandbox"])
    assert not loaded & {"nbgrader", "jupyter_client", "nbclient", "ipykernel", "zmq", "IPython"}


# ---- a live kernel ---------------------------------------------------------------------------------------------

SETUP = "import sys\nfrom sparkcourse.testing import check_number\nLEFT = []"
TEST_REF = ("### BEGIN HIDDEN TESTS\n"
            "from sparkcourse.reference import w00_spark_capacity as _ref\n"
            "import sparkcourse.reference.w00_spark_capacity as ref\n"
            "check_number(_ref.bits_per_param('fp16'), 16.0)\n"
            "check_number(ref.weight_bytes(1e9, 'fp8'), 1e9)\n"
            "LEFT.append(probe())\n"
            "print('TEST-RAN')\n"
            "### END HIDDEN TESTS")
STUDENT = """
import gc, sys

def probe():
    got = []
    for how, get in (("_getframe", lambda: sys._getframe(1).f_globals["_ref"].bits_per_param),
                     ("f_code", lambda: sys._getframe(1).f_code),
                     ("globals _ref", lambda: globals()["_ref"].bits_per_param),
                     ("sys.modules", lambda: sys.modules["sparkcourse.reference.w00_spark_capacity"].bits_per_param),
                     ("gc", lambda: gc.get_referrers(globals()["_ref"]))):
        try:
            got.append(f"{how}: GOT {get()!r}")
        except Exception as exc:
            got.append(f"{how}: blocked {type(exc).__name__}")
    return got
"""
AFTER = """
for name in ("_ref", "ref"):
    print(name, "LEFT" if name in globals() else "GONE")
print("MODULES", sorted(n for n in sys.modules if n.startswith("sparkcourse.reference")))
try:
    import sparkcourse.reference.w00_spark_capacity
    print("IMPORT GOT")
except ImportError as exc:
    print("IMPORT blocked", exc)
print("\\n".join(LEFT[0]))
held = []  # a refused import's traceback runs through the guards' own frames
try:
    import sparkcourse.reference
except ImportError as exc:
    tb = exc.__traceback__
    while tb is not None:
        try:
            held.append(type(tb.tb_frame.f_locals.get("self")).__name__)
        except RuntimeError:
            held.append("refused")
        tb = tb.tb_next
print("guard frames:", "GOT" if "_Warden" in held else "blocked", held)
"""


class SandboxKernel(KernelManager):
    """Launches the sandbox kernel as the grader does (synchronously)."""

    @property
    def kernel_spec(self) -> KernelSpec:
        """The sandbox kernel's spec."""
        return KernelSpec(argv=[sys.executable, "-P", "-m", "sparkcourse.grader.sandbox.kernel", "-f",
                                "{connection_file}"], display_name="sandbox", language="python", env={})


def _run_cells(cells: list[tuple[str, bool]]) -> list[str]:
    """Run cells (source, locked?) in a fresh sandbox kernel; the text each one printed or raised."""
    from sparkcourse.grader.sandbox.execute import exposed_paths
    from sparkcourse.grader.sandbox.guards import code_hash

    work = Path(tempfile.mkdtemp(prefix="sparkcourse-kernel-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK)
                                 else None))
    root = os.geteuid() == 0
    policy = dict(isolate=True, uid=4_242_424 if root else 0, hide=[], expose=exposed_paths(),
                  locked=[code_hash(src) for src, locked in cells if locked], memory_mb=4096, nproc=512,
                  fsize_mb=16, tmp_mb=64)
    km = SandboxKernel()
    env = dict(os.environ, SPARKCOURSE_SANDBOX=json.dumps(policy), PYTHONPATH=str(ROOT))
    km.start_kernel(env=env, cwd=str(work))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        texts = []
        for src, _ in cells:
            chunks: list[str] = []
            kc.execute_interactive(src, timeout=60, output_hook=lambda m, c=chunks: c.append(
                m["content"].get("text", "") + m["content"].get("evalue", "")))
            texts.append("".join(chunks))
        return texts
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        from sparkcourse.grader.sandbox.namespaces import kill_uid

        kill_uid(policy["uid"])
        subprocess.run(["rm", "-rf", str(work)], check=False)


@pytest.fixture(scope="module")
def kernel_run() -> list[str]:
    if sys.platform != "linux":
        pytest.skip("the sandbox kernel isolates itself on Linux only")
    return _run_cells([(SETUP, True), (STUDENT, False), (TEST_REF, True), (AFTER, False)])


def test_a_test_cell_uses_the_reference(kernel_run):
    assert "TEST-RAN" in kernel_run[2], kernel_run[2]


def test_reference_names_leave_the_namespace(kernel_run):
    out = kernel_run[3]
    assert "_ref GONE" in out and "ref GONE" in out, out
    assert "MODULES []" in out, out
    assert "IMPORT blocked" in out and "IMPORT GOT" not in out, out


def test_code_a_test_calls_reaches_nothing(kernel_run):
    out = kernel_run[3]
    assert "GOT" not in out, out
    assert out.count("blocked") >= 6 and "guard frames: blocked" in out, out


# ---- the kernel's own network namespace ----------------------------------------------------------------------

NET_PROBE = '''
import os, socket, subprocess, sys, threading, time
import zmq

GRADER_PORT, HOST, HOST_PORT = {port}, {host!r}, {host_port}


def _connect(addr, port):
    try:
        socket.create_connection((addr, port), timeout=3).close()
        return "OPEN"
    except OSError as exc:
        return f"BLOCKED ({{exc}})"


print("NET grader loopback:", _connect("127.0.0.1", GRADER_PORT))
if HOST:
    print("NET host address:", _connect(HOST, HOST_PORT))
_box = []
_t = threading.Thread(target=lambda: _box.append(_connect("127.0.0.1", GRADER_PORT)))
_t.start()
_t.join()
print("NET from a thread:", _box[0])
_child = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', %d), 3)"
                         % GRADER_PORT], capture_output=True)
print("NET from a subprocess:", "OPEN" if _child.returncode == 0 else "BLOCKED")
_app = get_ipython().kernel.parent
for _name, _ctx in (("kernel", _app.context), ("heartbeat", _app.heartbeat.context)):
    _s = _ctx.socket(zmq.STREAM)  # connect() runs in the context's I/O threads
    _s.connect(f"tcp://127.0.0.1:{{GRADER_PORT}}")
time.sleep(2)
_server = socket.socket()
_server.bind(("127.0.0.1", 0))
_server.listen()
threading.Thread(target=lambda: _server.accept()[0].sendall(b"pong"), daemon=True).start()
with socket.create_connection(_server.getsockname(), timeout=3) as _c:
    print("NET own loopback server:", _c.recv(4).decode())
print("NET threads in", len({{os.readlink(f"/proc/self/task/{{t}}/ns/net") for t in os.listdir("/proc/self/task")}}),
      "network namespace(s)")
'''


class Listener:
    """A TCP server in this (the grader's) network namespace that counts who reaches it."""

    def __init__(self, host: str) -> None:
        """Listen on ``host``, any port."""
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> int:
        """Stop; how many connections arrived."""
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.hits


def host_address() -> str:
    """An IPv4 address of one of this machine's interfaces other than the loopback, or ''."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                ifr = fcntl.ioctl(s, 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            addr = socket.inet_ntoa(ifr[20:24])
            if not addr.startswith("127."):
                return addr
    return ""


def net_probe(listeners: list[Listener], host: str) -> str:
    """The probe's source, aimed at the listeners (the first on 127.0.0.1, the last on ``host`` if any)."""
    return NET_PROBE.format(port=listeners[0].port, host=host, host_port=listeners[-1].port)


def check_net_probe(out: str, hits: list[int], host: str) -> None:
    """Nothing reached the grader's namespace; the kernel's own loopback works; one namespace for all threads."""
    assert hits == [0] * len(hits), (hits, out)
    assert "OPEN" not in out and out.count("BLOCKED") == 3 + bool(host), out
    assert "NET own loopback server: pong" in out, out
    assert "NET threads in 1 network namespace(s)" in out, out


def test_the_kernel_has_a_network_of_its_own():
    """A sandbox kernel started on its own (no namespace around it): its cells reach nothing of this process's
    network, not even the loopback, through sockets, threads, subprocesses or the kernel's ZMQ contexts."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the kernel makes its own network namespace only as root (see the README's threat model)")
    host = host_address()
    listeners = [Listener("127.0.0.1"), *([Listener(host)] if host else [])]
    try:
        out = _run_cells([(net_probe(listeners, host), False)])[0]
    finally:
        hits = [listener.close() for listener in listeners]
    check_net_probe(out, hits, host)


# ---- grading workers -------------------------------------------------------------------------------------------

def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_each_submission_gets_fresh_namespaces_from_a_worker():
    """`sparkcourse grade`'s long-lived worker forks one grader per submission: each in new network and PID
    namespaces of its own (the grader as PID 2 under the namespace's PID 1), not the worker's or the caller's; a
    process a grading leaves behind dies with it; a grader that crashes costs its own job, and the worker grades
    the next."""
    from sparkcourse.grader import course
    from sparkcourse.grader.sandbox import isolation_prefix
    from sparkcourse.grader.worker import WorkerPool, mode_of

    prefix, how = isolation_prefix()
    if not prefix:
        pytest.skip(f"no namespaces here ({how}): the worker forks plain processes, as the prefix would run them")
    own = {f"{ns}ns": os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "pid")}
    with WorkerPool(1, mode_of(prefix), course._nbgrader_env()) as pool:
        first = pool.run(["--probe", "linger", "987.654"], ROOT, 60, {})
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _cmdline(p) == b"sleep\x00987.654\x00"]
        crash = pool.run(["--probe", "crash"], ROOT, 60, {})
        second = pool.run(["--probe"], ROOT, 60, {})
        worker = pool._all[0].proc
    a, b = (json.loads(r["out"].strip().splitlines()[-1]) for r in (first, second))
    for seen in (a, b):
        assert seen["pid"] == 2 and seen["ppid"] == 1, seen
        assert seen["netns"] != own["netns"] and seen["pidns"] != own["pidns"], (seen, own)
    assert not left, "a process outlived its grading"
    assert first["rc"] == 0 and crash["rc"] != 0 and second["rc"] == 0, (first, crash, second)
    assert worker.poll() is not None, "the worker outlived its pool"
