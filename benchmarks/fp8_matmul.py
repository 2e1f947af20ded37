"""FP8 (E4M3, per-tensor scales) `torch._scaled_mm` vs BF16 `torch.matmul` on a CUDA GPU: TFLOP/s and error.

Usage: python benchmarks/fp8_matmul.py [--out benchmarks/fp8_matmul_<card>.md] [--repeats 50]
Times with CUDA events (sparkcourse.gpu.time_cuda); the error of each product is measured against an FP32
matmul of the same (unquantised) inputs. On a machine without CUDA it prints a message and exits with status 0.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sparkcourse

E4M3_MAX = 448.0
# (M, K, N): square, then LLM-like (tokens × hidden → out): decode-ish small M and prefill-ish large M,
# with Llama-3-8B widths (4096 hidden, 14336 MLP).
SHAPES = [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192),
          (16, 4096, 14336), (2048, 4096, 14336), (2048, 14336, 4096), (8192, 4096, 4096)]


def quantize_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor amax scaling to E4M3: (fp8 tensor, FP32 scale) with x ≈ fp8.float() * scale."""
    amax = x.abs().max().float()
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


def rel_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Relative Frobenius error ‖approx − exact‖ / ‖exact‖, computed in FP32."""
    approx, exact = approx.float(), exact.float()
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def fp8_matmul(a8, sa, b8, sb) -> torch.Tensor:
    """a @ b from E4M3 operands with per-tensor scales, BF16 out (b must be column-major for cuBLASLt)."""
    return torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)


def bench_shape(m: int, k: int, n: int, repeats: int) -> dict:
    """Time and error of BF16 and FP8 for one (M, K, N)."""
    from sparkcourse.gpu import time_cuda

    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, k, device="cuda", generator=g)
    b = torch.randn(n, k, device="cuda", generator=g).t()  # column-major K × N
    exact = a @ b
    a16, b16 = a.bfloat16(), b.bfloat16()
    a8, sa = quantize_e4m3(a)
    b8t, sb = quantize_e4m3(b.t())
    b8 = b8t.t()
    flops = 2 * m * k * n
    t16 = time_cuda(lambda: a16 @ b16, repeats=repeats)
    t8 = time_cuda(lambda: fp8_matmul(a8, sa, b8, sb), repeats=repeats)
    return dict(shape=(m, k, n), bf16_tflops=flops / t16 / 1e12, fp8_tflops=flops / t8 / 1e12,
                speedup=t16 / t8, bf16_err=rel_error(a16 @ b16, exact),
                fp8_err=rel_error(fp8_matmul(a8, sa, b8, sb), exact))


def markdown(rows: list[dict], card: str, command: str, versions: str) -> str:
    """The results as a markdown table with card, date and command."""
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# FP8 `torch._scaled_mm` vs BF16 matmul on {card}", "",
             f"- date: {date}", f"- command: `{command}`", f"- {versions}",
             "- FP8: E4M3 operands, one FP32 scale per tensor (amax/448), BF16 output; times are medians of CUDA"
             " events; error = ‖C − C_fp32‖/‖C_fp32‖ for Gaussian inputs.", "",
             "| M × K × N | BF16 TFLOP/s | FP8 TFLOP/s | FP8 speed-up | BF16 rel. error | FP8 rel. error |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m, k, n = r["shape"]
        lines.append(f"| {m} × {k} × {n} | {r['bf16_tflops']:.1f} | {r['fp8_tflops']:.1f} | {r['speedup']:.2f}× "
                     f"| {r['bf16_err']:.2e} | {r['fp8_err']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success or when there is no CUDA GPU, 1 if the GPU has no FP8 matmul."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the markdown table here (e.g. benchmarks/fp8_matmul_h100.md)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--shapes", help="M,K,N;M,K,N;... instead of the default list")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("fp8_matmul: no CUDA GPU here; FP8 tensor cores need Hopper (sm_90) or Blackwell. Nothing to do.")
        return 0
    cc = torch.cuda.get_device_capability()
    card = torch.cuda.get_device_name()
    if cc < (8, 9):
        print(f"fp8_matmul: {card} (sm_{cc[0]}{cc[1]}) has no FP8 tensor cores (need sm_89 or newer).")
        return 1
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    rows = []
    for m, k, n in shapes:
        r = bench_shape(m, k, n, args.repeats)
        rows.append(r)
        print(f"{m:6d} x {k:6d} x {n:6d}  BF16 {r['bf16_tflops']:7.1f}  FP8 {r['fp8_tflops']:7.1f} TFLOP/s "
              f"({r['speedup']:.2f}x)  err BF16 {r['bf16_err']:.2e}  FP8 {r['fp8_err']:.2e}", flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}, compute capability {cc[0]}.{cc[1]}"
    text = markdown(rows, card, command, versions)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
