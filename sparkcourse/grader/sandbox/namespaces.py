"""Namespaces on the grader's side, and the helpers both sides share.

``isolation_prefix()`` is the command prefix that runs one ``nbgrader autograde`` in its own network namespace (only
a private loopback: the grader and its kernel talk over it, nothing else is reachable) and PID namespace (when the
grader ends or is killed, every process the submission started dies with it). ``python -m
sparkcourse.grader.sandbox.namespaces netns-exec -- CMD...`` is what runs inside them.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys

# (the package imports this module to re-export it, so ``-m`` would make runpy warn that it is already imported)
ENTRY = ("-W", "ignore::RuntimeWarning:runpy", "-m", "sparkcourse.grader.sandbox.namespaces", "netns-exec", "--")


def enabled() -> bool:
    """Sandboxing is on unless SPARKCOURSE_SANDBOX=0."""
    return os.environ.get("SPARKCOURSE_SANDBOX", "1") != "0"


@functools.cache
def isolation_prefix() -> tuple[tuple[str, ...], str]:
    """(command prefix, description): network + PID namespaces for one autograde, where the platform allows."""
    unshare = shutil.which("unshare")
    if not enabled() or sys.platform != "linux" or not unshare:
        return (), "no namespaces (" + ("disabled" if not enabled() else "not Linux or no unshare(1)") + ")"
    base = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    tries = [(base, "network + PID namespaces")] if os.geteuid() == 0 else []
    tries.append(([unshare, "--user", "--map-root-user", *base[1:]], "user + network + PID namespaces"))
    for cmd, what in tries:
        probe = subprocess.run([*cmd, sys.executable, *ENTRY, "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return (*cmd, sys.executable, *ENTRY), what
    return (), "no namespaces (unshare refused: network open, processes not contained)"


def loopback_up() -> None:
    """Bring up ``lo`` in the current network namespace (a fresh one starts with it down)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def netns_exec(argv: list[str]) -> int:
    """Inside fresh namespaces: bring the loopback up, run ``argv`` as a child and reap orphans (we are PID 1)."""
    loopback_up()
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) & 0xFF


def kill_uid(uid: int) -> None:
    """Kill every process of the sandbox uid (root only): forked children and escapees of a submission."""
    if not uid or os.geteuid() != 0:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    """``python -m sparkcourse.grader.sandbox.namespaces netns-exec -- CMD...`` (used by isolation_prefix) or
    ``probe`` (prints what isolation_prefix found)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["netns-exec"]:
        rest = argv[1:]
        return netns_exec(rest[1:] if rest[:1] == ["--"] else rest)
    if argv[:1] == ["probe"]:
        print(isolation_prefix()[1])
        return 0
    print(main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
