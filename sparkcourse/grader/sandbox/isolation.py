"""The kernel isolates itself (Linux, as root or root of a user namespace): files, network, uid, limits, environment.

In the order the kernel applies them:

1. ``isolate_files``: a private mount namespace in which the course's private files and the reference solutions are
   hidden behind empty mounts, every other mount is read-only, ``/tmp`` and ``/dev/shm`` are fresh size-capped tmpfs
   and the working directory is a tmpfs copy of the student's own folder (hidden tests stripped).
2. ``leave_network``: a network namespace of the kernel's own with only its loopback, made while the process is
   still single-threaded (``unshare`` moves only the calling thread; every thread started later inherits it);
   ``KernelNetwork.grader_side`` steps back into the grader's namespace just long enough to bind each of the
   kernel's ZMQ sockets there, so the grader can reach the kernel while nothing the submission opens reaches out.
   This holds under plain ``nbgrader autograde`` too; ``sparkcourse grade`` adds its own network namespace around
   the grader (``namespaces.isolation_prefix``).
3. ``drop_privileges``, ``apply_limits``, ``clean_environment``: a throw-away uid, resource limits and an
   environment without the grader's secrets.

Every step says what it did, or why it could not, in ``NOTES`` (the kernel writes them to stderr; they end up in
``reports/grade.json``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from sparkcourse.grader.sandbox.namespaces import loopback_up

NOTES: list[str] = []

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
_FLAG_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED", "NBGRADER_EXECUTION", "SPARKCOURSE_PROFILE",
            "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM", "VIRTUAL_ENV", "PYTHONPATH",
            "JPY_SESSION_NAME")


# ---- mounts ---------------------------------------------------------------------------------------------------

def _libc() -> ctypes.CDLL:
    """libc with the argument types of the calls used here."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _errno_text() -> str:
    """The last libc call's error, in words."""
    return os.strerror(ctypes.get_errno())


def _mount(libc: ctypes.CDLL, src: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    """mount(2); OSError on failure."""
    def enc(s: str | None) -> bytes | None:
        """A C string argument."""
        return None if s is None else str(s).encode()

    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mountpoints() -> list[tuple[str, set[str]]]:
    """(mount point, options) for every mount this process sees."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            out.append((point, set(parts[5].split(","))))
    return out


def _bind_through(libc: ctypes.CDLL, ancestor: str, needed: list[str], n: int) -> None:
    """Cover ``ancestor`` with an empty tmpfs and bind the ``needed`` sub-folders back into it."""
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


def _expose(libc: ctypes.CDLL, targets: list[str]) -> None:
    """Make the interpreter and the package reachable for a throw-away uid: an ancestor folder that others
    cannot enter (say a 0700 home holding the Python install) is covered by an empty tmpfs through which only
    the needed sub-folders are bound back (the rest of that folder is hidden as a bonus)."""
    real = sorted({os.path.realpath(t) for t in targets if t})
    covered: set[str] = set()
    for n, target in enumerate(real):
        parts = target.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i]) or os.sep
            if ancestor in covered or os.stat(ancestor).st_mode & 0o001:
                continue
            needed = sorted({os.sep.join(t.split(os.sep)[:i + 1]) for t in real if t.startswith(ancestor + os.sep)})
            _bind_through(libc, ancestor, needed, n)
            covered.add(ancestor)


def _strip_hidden_tests(folder: str) -> None:
    """Remove hidden-test blocks from every notebook in the kernel's copy of the submission folder.

    nbgrader writes the notebook it grades, hidden tests restored, into that folder before running it; the
    kernel executes cells sent over the wire and never needs the file, so the copy it can read has none.
    """
    from sparkcourse.grader.authoring import BEGIN_HIDDEN, strip_hidden

    for path in Path(folder).rglob("*.ipynb"):
        try:
            nb = json.loads(path.read_text())
            for cell in nb.get("cells", []):
                src = cell.get("source", "")
                src = "".join(src) if isinstance(src, list) else src
                if BEGIN_HIDDEN in src:
                    cell["source"] = strip_hidden(src)
            path.write_text(json.dumps(nb))
        except (OSError, ValueError, AttributeError):
            path.unlink(missing_ok=True)  # unreadable: the kernel does not need it


def _keep_under_tmp(libc: ctypes.CDLL, targets: list[str]) -> list[str]:
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


def _hide(libc: ctypes.CDLL, paths: list[str]) -> int:
    """Hide folders behind an empty tmpfs and files behind /dev/null on a nodev mount; how many were hidden."""
    hidden = 0
    for path in paths:
        if os.path.islink(path) or not os.path.exists(path):
            continue
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=755")
        else:  # /dev/null on a nodev mount: opening it fails, so nothing is read and no write "succeeds"
            _mount(libc, "/dev/null", path, None, MS_BIND)
            _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC)
        hidden += 1
    return hidden


def _read_only_everywhere(libc: ctypes.CDLL) -> None:
    """Remount every mount read-only except /proc, /sys, /dev and the private /tmp."""
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


def _private_tmp(libc: ctypes.CDLL, cwd: str, tmp_mb: int, expose: list[str]) -> list[str]:
    """A fresh tmpfs on /tmp holding the working copy (built on /dev/shm first: cwd may lie under /tmp)."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
    shutil.copytree(cwd, "/dev/shm/.work", symlinks=True, ignore_dangling_symlinks=True)
    _strip_hidden_tests("/dev/shm/.work")  # the notebook being graded holds the restored hidden tests
    _expose(libc, expose)
    kept = _keep_under_tmp(libc, expose)
    _mount(libc, "/dev/shm", "/tmp", None, MS_MOVE)  # the kept binds move with it, to their old paths
    return kept


def _fresh_dev_shm_and_proc(libc: ctypes.CDLL) -> None:
    """A new /dev/shm, and a /proc of the current PID namespace (where the grader made one: only its processes)."""
    for src, target, fstype, flags, data in (
            ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777"),
            ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)):
        try:
            _mount(libc, src, target, fstype, flags, data)
        except OSError:
            pass


def isolate_files(policy: dict, cwd: str) -> bool:
    """Mount namespace: hide private paths, everything else read-only, private writable tmp and cwd."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        NOTES.append(f"files NOT isolated (no mount namespace: {_errno_text()}); "
                     "the submission sees the grader's files with the grader's permissions")
        return False
    tmp_mb = int(policy.get("tmp_mb", 256))
    try:
        kept = _private_tmp(libc, cwd, tmp_mb, policy.get("expose", []))
        hidden = _hide(libc, policy.get("hide", []))
        os.makedirs(cwd, exist_ok=True)  # the mount point, inside a hiding tmpfs when cwd was hidden
        _read_only_everywhere(libc)
        _mount(libc, "/tmp/.work", cwd, None, MS_BIND)
        os.chdir(cwd)
        _fresh_dev_shm_and_proc(libc)
    except OSError as exc:
        NOTES.append(f"file isolation incomplete: {exc}")
        return False
    NOTES.append(f"files isolated: {hidden} private paths hidden, filesystem read-only, "
                 f"private /tmp and working copy ({tmp_mb} MB)"
                 + (f"; {len(kept)} folders of the real /tmp bound in read-only" if kept else ""))
    return True


# ---- network --------------------------------------------------------------------------------------------------

class KernelNetwork:
    """The kernel's own network namespace, and the grader's, kept open to bind the kernel's sockets there."""

    def __init__(self, libc: ctypes.CDLL, grader_fd: int, own_fd: int) -> None:
        """Hold both namespaces (file descriptors from /proc/self/ns/net)."""
        self._libc, self._grader, self._own = libc, grader_fd, own_fd

    def _enter(self, fd: int) -> None:
        """setns(2) for the calling thread; OSError on failure."""
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns: {_errno_text()}")

    @contextlib.contextmanager
    def grader_side(self) -> Iterator[None]:
        """Run the block in the grader's namespace (this thread only): a socket bound there stays there."""
        if self._grader < 0:
            yield
            return
        self._enter(self._grader)
        try:
            yield
        finally:
            self._enter(self._own)

    def seal(self) -> None:
        """Forget the grader's namespace for good (before any cell runs)."""
        for fd in (self._grader, self._own):
            if fd >= 0:
                os.close(fd)
        self._grader = self._own = -1


def _threads() -> int:
    """How many threads this process has (unshare only moves the calling one)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def leave_network(policy: dict) -> KernelNetwork | None:
    """A network namespace of the kernel's own (only its loopback); None where the platform refuses one."""
    if not policy.get("isolate", True):
        return None
    if _threads() != 1:  # a thread left behind would keep the grader's network for the submission
        NOTES.append("network NOT isolated in the kernel (it already had threads)")
        return None
    libc = _libc()
    grader = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if libc.unshare(CLONE_NEWNET) != 0:
        os.close(grader)
        NOTES.append(f"network NOT isolated in the kernel (no network namespace: {_errno_text()}); "
                     "only the grader's namespace, where `sparkcourse grade` made one, stands between the "
                     "submission and the network")
        return None
    try:
        loopback_up()
    except OSError as exc:
        NOTES.append(f"the kernel's own loopback is down ({exc.strerror}): localhost servers will not work")
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    NOTES.append("network isolated in the kernel: a namespace of its own with only its loopback "
                 "(the grader reaches the kernel through sockets bound before it left)")
    return KernelNetwork(libc, grader, own)


# ---- uid, limits, environment ---------------------------------------------------------------------------------

def _real_root() -> bool:
    """True as the real root (uid 0 of the initial user namespace), not root of a user namespace."""
    try:
        with open("/proc/self/uid_map") as fh:
            first = fh.read().split()
        return os.getuid() == 0 and first[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


def _chown_tree(tops: list[str], uid: int) -> None:
    """Hand folders to ``uid``, never walking into a bound-in folder."""
    for top in tops:
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(folder, d))]
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                try:
                    os.lchown(name, uid, uid)
                except OSError:
                    pass


def drop_privileges(uid: int, chown: list[str]) -> bool:
    """Become a throw-away uid (root only): the grader's files are no longer the kernel's to write."""
    if not uid or not _real_root():
        NOTES.append("still running as the grader's user (not root, or in a user namespace): "
                     "files are protected only by the mounts above and RLIMIT_NPROC is not applied")
        return False
    _chown_tree(chown, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # glibc applies it to every thread
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


def clean_environment(home: str) -> None:
    """Only harmless variables reach the submission (no tokens or secrets of the grader's environment)."""
    keep = {k: v for k, v in os.environ.items() if k in ENV_KEEP}
    os.environ.clear()
    os.environ.update(keep, HOME=home, TMPDIR="/tmp", MPLCONFIGDIR=os.path.join(home, ".mpl"))
