"""Benchmark the week-01 reference kernels at full size on a real GPU, side by side with torch/cuBLAS ceilings.

    python benchmarks/cuda_numba.py --out benchmarks/cuda_numba_<card>.md     # on a CUDA GPU
    python benchmarks/cuda_numba.py --tiny --out /tmp/bench.md               # smoke test in the CUDA simulator

The kernels are imported from ``sparkcourse.reference.w01_cuda_numba``: the benchmarked code is the graded code.
Times are medians of CUDA events (numba's) around each launch; ceilings are measured in the same run
(torch device-to-device copy for bandwidth, torch.matmul = cuBLAS for FLOP/s).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

from sparkcourse.gpu import copy_bandwidth, setup_numba


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes in the CUDA simulator (smoke test)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    simulating = setup_numba(force_simulator=True if args.tiny else None)
    if simulating and not args.tiny:
        parser.error("no CUDA GPU found: pass --tiny for a simulator smoke test")

    import numpy as np
    import torch
    from numba import cuda

    from sparkcourse.reference import w01_cuda_numba as ref

    repeats = 1 if args.tiny else args.repeats
    rng = np.random.default_rng(0)
    if args.tiny:
        n_copy, stride, tshape, n_hist, (m, k, n) = 1000, 33, (40, 24), 1500, (20, 19, 21)
        sms = 1
    else:
        n_copy, stride, tshape, n_hist, (m, k, n) = 64 * 2**20, 33, (8192, 8192), 64 * 2**20, (4096, 4096, 4096)
        sms = cuda.get_current_device().MULTIPROCESSOR_COUNT

    def timed(launch) -> float:
        """Median seconds of ``launch()`` (CUDA events on a GPU, perf_counter in the simulator)."""
        if not simulating:
            launch()  # compile and warm up (the simulator has nothing to warm: one launch is the smoke test)
        times = []
        for _ in range(repeats):
            if simulating:
                t0 = time.perf_counter()
                launch()
                times.append(time.perf_counter() - t0)
            else:
                start, end = cuda.event(timing=True), cuda.event(timing=True)
                start.record()
                launch()
                end.record()
                end.synchronize()
                times.append(cuda.event_elapsed_time(start, end) / 1e3)
        return statistics.median(times)

    rows: list[tuple[str, str, float, float, str, float]] = []  # name, size, seconds, rate, unit, ceiling

    # Bandwidth ceiling: torch's device copy (read + write counted)
    ceiling_bw = copy_bandwidth(n_copy * 4, repeats=repeats)
    rows.append(("torch device copy (ceiling)", f"{n_copy:,} fp32", 2 * n_copy * 4 / ceiling_bw,
                 ceiling_bw / 1e9, "GB/s", ceiling_bw))

    # Copies
    a = cuda.to_device(rng.random(n_copy, dtype=np.float32))
    out = cuda.device_array(n_copy, np.float32)
    grid = max(1, min(ref.blocks_for(n_copy, 256), sms * 32))
    s = timed(lambda: ref.copy_coalesced[grid, 256](a, out))
    rows.append(("coalesced copy (grid-stride)", f"{n_copy:,} fp32", s, 2 * n_copy * 4 / s / 1e9, "GB/s", ceiling_bw))
    # The same kernel moving 16 bytes per thread (the float32 data viewed as complex128): fewer, wider accesses.
    a16, out16 = a.view(np.complex128), out.view(np.complex128)
    grid16 = max(1, min(ref.blocks_for(a16.size, 256), sms * 32))
    s = timed(lambda: ref.copy_coalesced[grid16, 256](a16, out16))
    rows.append(("coalesced copy, 16 B per thread", f"{n_copy:,} fp32", s, 2 * n_copy * 4 / s / 1e9, "GB/s",
                 ceiling_bw))
    n_out = n_copy // stride
    out_s = cuda.device_array(n_out, np.float32)
    s = timed(lambda: ref.strided_copy[max(1, min(ref.blocks_for(n_out, 256), sms * 32)), 256](a, out_s, stride))
    rows.append((f"stride-{stride} copy (useful bytes)", f"{n_out:,} fp32", s, 2 * n_out * 4 / s / 1e9, "GB/s",
                 ceiling_bw))

    # Transposes
    ta = cuda.to_device(rng.random(tshape, dtype=np.float32))
    tout = cuda.device_array(tshape[::-1], np.float32)
    tbytes = 2 * tshape[0] * tshape[1] * 4
    ngrid = (ref.blocks_for(tshape[1], 32), ref.blocks_for(tshape[0], 8))
    s = timed(lambda: ref.transpose_naive[ngrid, (32, 8)](ta, tout))
    rows.append(("naive transpose", f"{tshape[0]}x{tshape[1]} fp32", s, tbytes / s / 1e9, "GB/s", ceiling_bw))
    tgrid, tblock = ref.transpose_grid(tshape)
    s = timed(lambda: ref.transpose_tiled[tgrid, tblock](ta, tout))
    rows.append(("tiled transpose (32x33 tile)", f"{tshape[0]}x{tshape[1]} fp32", s, tbytes / s / 1e9, "GB/s",
                 ceiling_bw))

    # Histograms
    data = cuda.to_device(rng.integers(0, ref.NBINS, n_hist).astype(np.int32))
    bins = cuda.device_array(ref.NBINS, np.int32)
    hgrid = max(1, min(ref.blocks_for(n_hist, 256), sms * 8))
    s = timed(lambda: ref.hist_global[hgrid, 256](data, bins))
    rows.append((f"global-atomics histogram ({ref.NBINS} bins)", f"{n_hist:,} int32", s, n_hist * 4 / s / 1e9,
                 "GB/s", ceiling_bw))
    s = timed(lambda: ref.hist_shared[hgrid, 256](data, bins))
    rows.append((f"privatised histogram ({ref.NBINS} bins)", f"{n_hist:,} int32", s, n_hist * 4 / s / 1e9,
                 "GB/s", ceiling_bw))

    # Matmuls against cuBLAS fp32 (TF32 off)
    device = "cuda" if torch.cuda.is_available() and not simulating else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    tA = torch.randn(m, k, device=device)
    tB = torch.randn(k, n, device=device)
    flops = 2 * m * k * n

    def torch_mm():
        torch.matmul(tA, tB)
        if device == "cuda":
            torch.cuda.synchronize()

    if simulating:
        t0 = time.perf_counter()
        torch_mm()
        s_blas = time.perf_counter() - t0
    else:
        from sparkcourse.gpu import time_cuda

        s_blas = time_cuda(lambda: torch.matmul(tA, tB), repeats=repeats)
    ceiling_flops = flops / s_blas
    A = cuda.to_device(tA.cpu().numpy())
    B = cuda.to_device(tB.cpu().numpy())
    C = cuda.device_array((m, n), np.float32)
    mgrid, mblock = ref.matmul_grid(m, n)
    s = timed(lambda: ref.matmul_naive[mgrid, mblock](A, B, C))
    rows.append(("naive matmul", f"{m}x{k}x{n} fp32", s, flops / s / 1e12, "TFLOP/s", ceiling_flops))
    s = timed(lambda: ref.matmul_tiled[mgrid, mblock](A, B, C))
    rows.append((f"tiled matmul ({ref.MM_TILE}x{ref.MM_TILE})", f"{m}x{k}x{n} fp32", s, flops / s / 1e12, "TFLOP/s",
                 ceiling_flops))
    rows.append(("cuBLAS fp32 via torch.matmul (ceiling)", f"{m}x{k}x{n} fp32", s_blas, ceiling_flops / 1e12,
                 "TFLOP/s", ceiling_flops))

    card = "CUDA simulator (CPU, --tiny)" if simulating else torch.cuda.get_device_name(0)
    lines = [
        f"# Week 01 kernels on {card}",
        "",
        f"- card: {card}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `python benchmarks/cuda_numba.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- host: {platform.machine()}, torch {torch.__version__}, median of {repeats} runs (CUDA events)",
        "",
        "| kernel | size | time (ms) | achieved | ratio to ceiling |",
        "|---|---|---|---|---|",
    ]
    for name, size, seconds, rate, unit, ceiling in rows:
        scale = 1e9 if unit == "GB/s" else 1e12
        lines.append(f"| {name} | {size} | {seconds * 1e3:.3f} | {rate:.2f} {unit} | {rate * scale / ceiling:.3f} |")
    if simulating:
        lines += ["", "Simulator timings measure Python, not a GPU: this file only proves the script runs."]
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
