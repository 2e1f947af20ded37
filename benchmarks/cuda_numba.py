"""Benchmark the week-01 reference kernels at full size on a real GPU, side by side with torch/cuBLAS ceilings.

    python benchmarks/cuda_numba.py --out benchmarks/cuda_numba_<card>.md     # on a CUDA GPU
    python benchmarks/cuda_numba.py --tiny --out /tmp/bench.md               # smoke test in the CUDA simulator

The kernels are imported from ``sparkcourse.reference.w01_cuda_numba``: the benchmarked code is the graded code;
the register-blocked matmul (an ungraded lab section) from ``sparkcourse.labs.w01_cuda_numba``, whose
``run_benchmarks`` is also what the notebook's GPU lab runs on the student's own kernels. Times are medians of CUDA events (numba's) around each launch; ceilings are measured in the same run
(torch device-to-device copy for bandwidth, torch.matmul = cuBLAS for FLOP/s).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

from sparkcourse.gpu import setup_numba


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

    import torch

    from sparkcourse.labs.w01_cuda_numba import markdown_rows, run_benchmarks
    from sparkcourse.reference import w01_cuda_numba as ref

    repeats = 1 if args.tiny else args.repeats
    names = ("copy_coalesced", "strided_copy", "transpose_naive", "transpose_tiled", "hist_global", "hist_shared",
             "matmul_naive", "matmul_tiled")
    rows = run_benchmarks({name: getattr(ref, name) for name in names}, tiny=args.tiny, repeats=repeats)

    card = "CUDA simulator (CPU, --tiny)" if simulating else torch.cuda.get_device_name(0)
    lines = [
        f"# Week 01 kernels on {card}",
        "",
        f"- card: {card}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `python benchmarks/cuda_numba.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- host: {platform.machine()}, torch {torch.__version__}, median of {repeats} runs (CUDA events)",
        "",
    ]
    lines += markdown_rows(rows)
    if simulating:
        lines += ["", "Simulator timings measure Python, not a GPU: this file only proves the script runs."]
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
