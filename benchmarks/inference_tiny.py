"""Week 09's measurements on CPU: the tiny LM with and without a KV cache, the cost model fitted on it, static vs
continuous batching on seeded traces (several seeds and arrival rates), paged vs contiguous KV waste, and the
radix prefix cache's hit rates.

Usage: python benchmarks/inference_tiny.py [--seeds 0 1 2] [--threads 1] [--out benchmarks/inference_tiny_cpu.md]
Uses the reference solutions (instructor code) and the week's lab module. The machine may be shared: the file
records the 1-minute load average at the start and the end; timings on a shared machine are noisy, the
simulation's ratios depend only on the fitted cost model.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sparkcourse
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sparkcourse.gpu import cpu_model, load_average  # noqa: E402
from sparkcourse.labs import w09_inference as lab  # noqa: E402
from sparkcourse.models import load_tiny_lm  # noqa: E402
from sparkcourse.reference import w09_inference as ref  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/inference_tiny_cpu.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0, t0 = load_average()[0], time.time()
    model, tok = load_tiny_lm(torch.float32)
    lines = [
        "# Week 09 on CPU: KV cache, batching simulation, paged waste, prefix cache",
        "",
        f"Machine: 2-vCPU AMD EPYC, shared ({cpu_model()}), {args.threads} torch thread(s); "
        f"date {datetime.date.today().isoformat()}; Python {platform.python_version()}, torch {torch.__version__}.",
        f"Command: `python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}`",
        "",
        "## Cost per generated token, tiny LM (float32), prompt of 9 tokens",
        "",
        "| new tokens | with the KV cache (ms/token) | without (ms/token) | ratio | transformers `generate` (ms/token) |",
        "|---|---|---|---|---|",
    ]
    prompt = tok("Once upon a time there was a little", return_tensors="pt").input_ids

    def hf(m, ids, n):
        with torch.no_grad():
            return m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    for n in (8, 32, 128):
        best = [min(lab.time_per_token(fn, model, prompt, [n])[0] for _ in range(3))
                for fn in (ref.greedy_generate, lab.greedy_without_cache, hf)]
        lines.append(f"| {n} | {best[0] * 1e3:.2f} | {best[1] * 1e3:.2f} | {best[1] / best[0]:.1f}x | "
                     f"{best[2] * 1e3:.2f} |")
    cost = lab.calibrate_step_cost(model, repeat=5)
    lines += ["", "## Cost model fitted on the tiny LM (least squares, best of 5 per point)", "",
              f"step_time(n, t) = {cost.fixed * 1e3:.3f} ms + {cost.per_seq * 1e3:.4f} ms × n decoding sequences "
              f"+ {cost.per_prefill_token * 1e3:.5f} ms × t prompt tokens", "",
              "| decoding sequences | prompt tokens | measured (ms) | model (ms) |", "|---|---|---|---|"]
    for (_, n, t), secs in cost.samples:
        lines.append(f"| {int(n)} | {int(t)} | {secs * 1e3:.2f} | {cost(n, t) * 1e3:.2f} |")
    max_batch = 32
    capacity = max_batch / (338 * cost(max_batch, 0))
    lines += ["", f"## Static vs continuous batching (max batch {max_batch}, 300 requests, Poisson arrivals)", "",
              "Lengths: prompt and output log-normal with means 161 and 338 tokens (the ShareGPT means of Kwon et al. "
              "2023, §6.1), log-space spread 1.0, total clipped to 2048. Rates as multiples of the rate a full "
              f"continuous batch sustains ({capacity:.2f} requests/s here). Mean ± sd over seeds "
              f"{', '.join(map(str, args.seeds))}.", "",
              "| rate | policy | throughput (tokens/s) | p50 latency (s) | p99 latency (s) | continuous / static |",
              "|---|---|---|---|---|---|"]
    for mult in (0.5, 1.0, 1.5):
        res = {"static": [], "continuous": []}
        for seed in args.seeds:
            trace = lab.arrival_trace(300, rate=mult * capacity, seed=seed)
            res["static"].append(lab.serving_metrics(trace, ref.static_batching(trace, max_batch, cost)))
            res["continuous"].append(lab.serving_metrics(trace, ref.continuous_batching(trace, max_batch, cost)))
        ratios = [c["throughput"] / s["throughput"] for s, c in zip(res["static"], res["continuous"], strict=True)]
        for name, runs in res.items():
            cell = lambda k, runs=runs: f"{np.mean([r[k] for r in runs]):.1f} ± {np.std([r[k] for r in runs]):.1f}"  # noqa: E731
            extra = f"{np.mean(ratios):.2f}x ± {np.std(ratios):.2f}" if name == "continuous" else ""
            lines.append(f"| {mult:g}× | {name} | {cell('throughput')} | {cell('p50')} | {cell('p99')} | {extra} |")
    prompt_len, output_len = lab.length_trace(4000, 0)
    lengths = (prompt_len + output_len).tolist()
    lines += ["", "## KV waste at the final lengths (4000 requests of the distribution above, max_len 2048)", "",
              "| block size | contiguous waste | paged waste |", "|---|---|---|"]
    for bs in (1, 8, 16, 32, 64):
        c, p = ref.kv_waste(lengths, bs, 2048)
        lines.append(f"| {bs} | {c:.1%} | {p:.2%} |")
    lines += ["", "## Radix prefix cache (`lab.RadixCache`, LRU leaves): hit rate by capacity in tokens", "",
              "| workload | prompt tokens | 500 | 2000 | 8000 | unbounded |", "|---|---|---|---|---|---|"]
    for name, prompts in (("multi-turn, 8 users × 5 turns", lab.multi_turn_workload(8, 5, 0)),
                          ("few-shot, 3 tasks × 5 shots, 200 questions", lab.few_shot_workload(200, 0))):
        rates = [lab.prefix_hit_rate(prompts, c) for c in (500, 2000, 8000, 10**9)]
        lines.append(f"| {name} | {sum(map(len, prompts))} | " + " | ".join(f"{r:.0%}" for r in rates) + " |")
    lines += ["", f"Load average (1 min): {load0:.1f} at the start, {load_average()[0]:.1f} at the end; "
              f"{time.time() - t0:.0f} s in all.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
