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


SMOKE_FIX = {
    "numba-cuda kernel": 'pip install -e ".[spark]" (numba-cuda[cu13]==0.30.4: NVIDIA\'s CUDA target, which knows '
                         "Blackwell) with a CUDA 13 driver, then restart the kernel",
    "FP8 _scaled_mm": "install a CUDA build of torch 2.13.0 for this CUDA version (README: Running on a DGX Spark)",
    "bitsandbytes 4-bit": "install bitsandbytes 0.50.2 built with CUDA (pip install -e .), then `python -m bitsandbytes`",
}


def smoke_checks() -> list[tuple[str, bool, str]]:
    """GPU smoke tests for ``sparkcourse doctor``: ``(name, ok, detail or fix)`` for each.

    A numba-cuda kernel, FP8 ``torch._scaled_mm`` (compute capability 8.9+), a bitsandbytes NF4 ``Linear4bit``
    forward and backward, and what kind of memory the GPU has. Without a CUDA GPU: one line saying so, not a failure.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - a hard dependency
        return [("GPU smoke tests", True, "skipped: torch is not installed")]
    if not torch.cuda.is_available():
        return [("GPU smoke tests", True, "skipped: no CUDA GPU")]
    info = detect()
    free, total = torch.cuda.mem_get_info()
    if info.unified:
        memory = (f"unified: the GPU shares {info.total_memory_bytes / 1e9:.1f} GB with the CPU (/proc/meminfo); "
                  f"CUDA reports {free / 1e9:.1f} GB free, which under-reports what the page cache can give back")
    else:
        memory = f"dedicated: {total / 1e9:.1f} GB of GPU memory, {free / 1e9:.1f} GB free"
    out = [("memory", True, memory)]
    for name, check in (("numba-cuda kernel", _smoke_numba), ("FP8 _scaled_mm", _smoke_fp8),
                        ("bitsandbytes 4-bit", _smoke_bnb4)):
        try:
            ok, detail = check(info)
        except Exception as exc:  # a diagnosis: report every failure with its fix, never crash
            ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc) else ''}"
        out.append((name, ok, detail if ok else f"{detail} — fix: {SMOKE_FIX[name]}"))
    return out


def _smoke_numba(info: DeviceInfo) -> tuple[bool, str]:
    """A numba CUDA kernel compiles and runs on the GPU (not the simulator)."""
    import importlib.metadata as md
    import warnings

    import numpy as np

    if setup_numba(force_simulator=False):  # pragma: no cover - force_simulator=False never simulates
        return False, "numba would use the CUDA simulator"
    from numba import cuda

    @cuda.jit
    def add_one(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] += 1

    n = 1000  # not a multiple of the block size
    d = cuda.to_device(np.arange(n, dtype=np.float32))
    with warnings.catch_warnings():  # a 4-block grid is small on purpose: no occupancy warning
        warnings.simplefilter("ignore")
        add_one[(n + 255) // 256, 256](d)
    ok = bool(np.array_equal(d.copy_to_host(), np.arange(n, dtype=np.float32) + 1))
    try:
        target = f"numba-cuda {md.version('numba-cuda')}"
    except md.PackageNotFoundError:
        target = "numba's built-in CUDA target (numba-cuda is not installed)"
    return ok, f"{target}: a kernel ran on {info.name}" if ok else f"{target}: the kernel gave wrong values"


def fp8_supported(cc: tuple[int, int] | None) -> bool:
    """FP8 tensor cores (``torch._scaled_mm`` with E4M3/E5M2): compute capability 8.9 (Ada) and later."""
    return cc is not None and tuple(cc) >= (8, 9)


def fp4_supported(cc: tuple[int, int] | None) -> bool:
    """NVFP4 tensor cores (``float4_e2m1fn_x2`` with E4M3 block scales): Blackwell, compute capability 10.0+.

    Covers sm_100 (B200), sm_120 (RTX Blackwell) and the Spark's GB10 (sm_121); Hopper (9.0) has none.
    """
    return cc is not None and cc[0] >= 10


def scaled_mm_fp8(a, b, scale_a, scale_b, out_dtype=None):
    """``a @ b.T`` on FP8 tensor cores with one FP32 scale per tensor (``torch._scaled_mm``).

    ``a`` is ``[M, K]`` and ``b`` ``[N, K]`` (the ``nn.Linear`` weight layout), both FP8 and on the GPU; the result
    is ``scale_a * scale_b * (a @ b.T)`` in ``out_dtype`` (BF16 by default). ``_scaled_mm`` wants ``mat2``
    column-major, which ``b.t()`` of a row-major ``b`` is, and the scales as float32 tensors on the same device.
    Row-wise scales (``scale_a`` ``[M, 1]``, ``scale_b`` ``[1, N]``) also exist in torch, on fewer GPUs/builds.
    """
    import torch

    dev = a.device
    sa = torch.as_tensor(scale_a, dtype=torch.float32, device=dev)
    sb = torch.as_tensor(scale_b, dtype=torch.float32, device=dev)
    return torch._scaled_mm(a.contiguous(), b.contiguous().t(), scale_a=sa, scale_b=sb,
                            out_dtype=out_dtype or torch.bfloat16)


def blocked_scales(scales):
    """Rearrange ``[rows, K/16]`` block scales into cuBLAS's swizzled 128×4 tile layout (flattened).

    The layout of NVIDIA's cuBLAS docs, "1D block scaling factors layout": rows padded to 128, scale columns to 4,
    each 128×4 tile stored as 32×16 (the same as ``to_blocked`` in torch's own tests).
    """
    import torch

    rows, cols = scales.shape
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    padded = torch.zeros(pr, pc, dtype=scales.dtype, device=scales.device)
    padded[:rows, :cols] = scales
    blocks = padded.view(pr // 128, 128, pc // 4, 4).permute(0, 2, 1, 3)
    return blocks.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1, 32, 16).flatten()


def scaled_mm_nvfp4(a_packed, a_block, a_global, b_packed, b_block, b_global, out_dtype=None):
    """``A @ B.T`` for two NVFP4 tensors on FP4 tensor cores (Blackwell), via ``torch._scaled_mm``.

    Each operand is what an NVFP4 quantiser returns: ``packed`` uint8 ``[rows, K/2]`` (two E2M1 codes a byte,
    element 2i in the low nibble — ``torch.float4_e2m1fn_x2``'s layout), ``block`` the block scales ``[rows, K/16]``
    (values of E4M3) and ``global`` the FP32 tensor scale. K must be a multiple of 32. The kernel applies the
    block scales; the two tensor scales are multiplied into the result afterwards.
    """
    import torch

    dev = a_packed.device
    a = a_packed.contiguous().view(torch.float4_e2m1fn_x2)
    b = b_packed.contiguous().view(torch.float4_e2m1fn_x2)
    sa = blocked_scales(a_block.to(dev, torch.float32).to(torch.float8_e4m3fn))
    sb = blocked_scales(b_block.to(dev, torch.float32).to(torch.float8_e4m3fn))
    out = torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    return (out.float() * (float(a_global) * float(b_global))).to(out_dtype or torch.bfloat16)


def _smoke_fp8(info: DeviceInfo) -> tuple[bool, str]:
    """FP8 E4M3 ``torch._scaled_mm`` agrees with the same product in float32 (compute capability 8.9+)."""
    import torch

    cc = info.compute_capability or (0, 0)
    if not fp8_supported(cc):
        return True, f"skipped: sm_{cc[0]}{cc[1]} has no FP8 tensor cores (they need compute capability 8.9+)"
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(64, 128, device="cuda", generator=gen).to(torch.float8_e4m3fn)
    b = torch.randn(48, 128, device="cuda", generator=gen).to(torch.float8_e4m3fn)  # [N, K]: passed as column-major
    got = scaled_mm_fp8(a, b, 1.0, 1.0).float()
    want = a.float() @ b.float().t()
    err = float((got - want).abs().max() / want.abs().max())
    return err < 2e-2, f"E4M3 64×128×48 on sm_{cc[0]}{cc[1]}: max error {err:.1e} of the largest output"


def _smoke_bnb4(info: DeviceInfo) -> tuple[bool, str]:
    """A bitsandbytes NF4 ``Linear4bit`` runs forward and backward on the GPU and matches its dequantised weight."""
    import bitsandbytes as bnb
    import torch

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(128, 40, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(40, 128), requires_grad=False, quant_type="nf4")
    layer = layer.cuda()
    w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    x = torch.randn(8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    y.float().sum().backward()
    want = x.detach().float() @ w.t()
    fwd = float((y.detach().float() - want).abs().max() / want.abs().max())
    bwd = float((x.grad.float() - w.sum(0).expand(8, -1)).abs().max() / w.sum(0).abs().max())
    ok = fwd < 3e-2 and bwd < 3e-2
    return ok, f"NF4 Linear4bit forward and backward on {layer.weight.device}: relative errors {fwd:.1e}, {bwd:.1e}"
