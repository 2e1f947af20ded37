"""Device facts: CUDA / DGX Spark (GB10) / CPU detection, unified memory, CUDA-event timing, numba set-up."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SPARK_MARKERS = ("GB10",)


@dataclass(frozen=True)
class DeviceInfo:
    """What this machine is, for set-up banners and profile-gated cells."""

    kind: str  # "spark", "cuda" or "cpu"
    name: str
    total_memory_bytes: int
    unified: bool
    compute_capability: tuple[int, int] | None = None

    def describe(self) -> str:
        """One line for the set-up banner."""
        gib = self.total_memory_bytes / 2**30
        mem = "unified CPU+GPU memory" if self.unified else ("system memory" if self.kind == "cpu" else "GPU memory")
        cc = f", sm_{self.compute_capability[0]}{self.compute_capability[1]}" if self.compute_capability else ""
        return f"{self.kind}: {self.name}{cc}, {gib:.1f} GiB {mem}"


def meminfo_bytes(field: str = "MemTotal", path: str = "/proc/meminfo") -> int | None:
    """A field of /proc/meminfo in bytes (the Spark's GPU shares this pool), or None if unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            if key.strip() == field:
                value, *unit = rest.split()
                return int(value) * (1024 if unit and unit[0].lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None


def is_spark_name(name: str) -> bool:
    """True for a GPU name that is a DGX Spark's GB10."""
    return any(marker in name for marker in SPARK_MARKERS)


def detect() -> DeviceInfo:
    """Detect CUDA / DGX Spark / CPU. On a Spark the usable memory is the unified pool in /proc/meminfo."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            name = props.name
            cc = (props.major, props.minor)
            if is_spark_name(name):
                total = meminfo_bytes() or props.total_memory
                return DeviceInfo("spark", name, total, True, cc)
            return DeviceInfo("cuda", name, props.total_memory, False, cc)
    except ImportError:  # pragma: no cover
        pass
    return DeviceInfo("cpu", cpu_model(), meminfo_bytes() or 0, False)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC ..."), else what ``platform`` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages (NaN where the OS has none): benchmarks report them."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return (float("nan"),) * 3


def time_cuda(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds per call of ``fn``: CUDA events on a GPU, ``perf_counter`` on a CPU."""
    import statistics

    import torch

    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 20) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted), the ceiling for kernels."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = time_cuda(lambda: dst.copy_(src), repeats=repeats)
    return 2 * src.numel() * 4 / seconds


def numpy_shim() -> None:
    """numba-cuda 0.30 calls ``np.row_stack``, removed in numpy 2.5: alias it to ``np.vstack``."""
    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def setup_numba(force_simulator: bool | None = None) -> bool:
    """Prepare ``numba.cuda``: the CUDA simulator when there is no GPU. Returns True when simulating.

    Must run before numba is imported; the simulator cannot be switched on afterwards.
    """
    if force_simulator is None:
        force_simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or not _has_cuda_driver()
    wanted = "1" if force_simulator else "0"
    if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != wanted:
        raise RuntimeError(
            "numba was imported before sparkcourse.gpu.setup_numba(): restart the kernel and run the set-up cell first"
        )
    os.environ["NUMBA_ENABLE_CUDASIM"] = wanted
    numpy_shim()
    return force_simulator


def _has_cuda_driver() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False
