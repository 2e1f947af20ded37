"""Week 08 on CPU: a tiny MoE language model against a dense one with the same active parameters.

    python benchmarks/moe_tiny.py --seeds 0 1 2 --steps 300 --out benchmarks/moe_tiny_cpu.md

Both are transformers ``MixtralForCausalLM`` (``sparkcourse.labs.w08_moe``) trained from scratch on the course's
instruction data (tiny LM tokenizer) with AdamW; the MoE with and without the load-balancing loss (the
reference answers of week 08 as router and loss). Reports the held-out next-token loss per seed (mean ± sd) and
the expert load (share of tokens per expert, per layer) averaged over seeds.
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

import torch

from sparkcourse.labs import w08_moe as lab
from sparkcourse.reference import w08_moe as ref  # the benchmark routes with week 08's answers
from sparkcourse.stats import mean_sd

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def plot_loads(rows: list[dict], names: list[str], shape: dict, path: Path) -> None:
    """The expert-utilisation histogram: sorted shares per seed, one panel per MoE run and layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, experts = shape["layers"], shape["experts"]
    fig, axes = plt.subplots(len(names), layers, figsize=(5 * layers, 3 * len(names)), sharey=True, squeeze=False)
    for i, name in enumerate(names):
        runs = [r for r in rows if r["model"] == name]
        for layer in range(layers):
            ax = axes[i][layer]
            width = 0.8 / len(runs)
            for j, r in enumerate(runs):
                share = r["load"][layer].sort(descending=True).values.numpy()
                ax.bar([e + j * width for e in range(experts)], share, width=width, label=f"seed {r['seed']}")
            ax.axhline(shape["top_k"] / experts, color="k", ls="--", lw=1, label="balanced (k/E)")
            ax.set_title(f"{name}, layer {layer}")
            ax.set_xlabel("experts, busiest first")
            ax.set_ylabel("share of tokens")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--aux", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/moe_tiny_cpu.md"))
    ap.add_argument("--machine", default="2-vCPU AMD EPYC, shared")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load0, t0 = os.getloadavg()[0], time.time()
    shape = dict(hidden=64, layers=2, experts=8, top_k=2, expert_size=64, batch=16, block=64)
    rows = lab.compare(ref.route, ref.load_balancing_loss, seeds=args.seeds, steps=args.steps, aux_coefs=args.aux,
                       log=print, **shape)
    wall = time.time() - t0
    names = list(dict.fromkeys(r["model"] for r in rows))
    out = [
        "# Week 08: a tiny MoE vs a dense model with the same active parameters (CPU)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- command: `python benchmarks/moe_tiny.py {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"- machine: {args.machine} ({platform.machine()}), torch threads 1; 1-minute load average {load0:.2f} at "
        f"the start and {os.getloadavg()[0]:.2f} at the end (times are noisy; losses and loads are not)",
        f"- versions: torch {torch.__version__}, transformers {__import__('transformers').__version__}, python "
        f"{platform.python_version()}",
        f"- wall time: {wall / 60:.1f} min",
        f"- models: `MixtralForCausalLM`, hidden {shape['hidden']}, {shape['layers']} layers, 4 heads / 2 KV heads, "
        f"vocab 525 (tiny LM tokenizer), tied embeddings. MoE: {shape['experts']} experts of width "
        f"{shape['expert_size']}, top-{shape['top_k']}. Dense: one expert of width "
        f"{shape['top_k'] * shape['expert_size']} (same FFN parameters per token).",
        f"- training: {args.steps} AdamW steps (lr 3e-3) of {shape['batch']} blocks of {shape['block']} tokens from "
        "`instruct/train.jsonl` (prompt, space, response, EOS; packed); evaluation: next-token loss on the first 64 "
        "blocks of `instruct/test.jsonl`. Aux loss: coefficient times the mean over layers of N·Σ fᵢ·Pᵢ.",
        "",
        "| model | total params | active params | " + " | ".join(f"seed {s}" for s in args.seeds)
        + " | eval loss (mean ± sd) | train s (mean) |",
        "|---|---|---|" + "---|" * len(args.seeds) + "---|---|",
    ]
    for name in names:
        rs = [r for r in rows if r["model"] == name]
        m, sd = mean_sd([r["eval_loss"] for r in rs])
        out.append(f"| {name} | {rs[0]['total_params']:,} | {rs[0]['active_params']:,} | "
                   + " | ".join(f"{r['eval_loss']:.3f}" for r in rs)
                   + f" | {m:.3f} ± {sd:.3f} | {sum(r['seconds'] for r in rs) / len(rs):.0f} |")
    out += ["", "## Expert load (share of tokens routed to each expert, mean over seeds; balanced = "
            f"{shape['top_k'] / shape['experts']:.3f})", ""]
    out += ["| model | layer | " + " | ".join(f"e{i}" for i in range(shape["experts"])) + " | max/min |",
            "|---|---|" + "---|" * (shape["experts"] + 1)]
    for name in names[1:]:
        load = torch.stack([r["load"] for r in rows if r["model"] == name]).mean(0)
        for layer, row in enumerate(load):
            ratio = row.max() / row.min() if row.min() > 0 else float("inf")
            out.append(f"| {name} | {layer} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {ratio:.1f} |")
    out += ["", "The expert loads above are sorted by expert index, not by size: which expert is popular differs "
            "from seed to seed, so the mean over seeds flattens them. Per seed, the largest/smallest share:", ""]
    for name in names[1:]:
        per = [f"seed {r['seed']}: " + ", ".join(f"layer {i} {row.max():.3f}/{row.min():.3f}"
                                                  for i, row in enumerate(r["load"]))
               for r in rows if r["model"] == name]
        out.append(f"- {name}: " + "; ".join(per))
    png = args.out.with_suffix(".png")
    plot_loads(rows, names[1:], shape, png)
    out += ["", f"![expert load, sorted, per seed]({png.name})", "",
            f"`{png.name}`: for each MoE and layer, every seed's expert shares sorted from the busiest expert to the "
            "idlest (sorting makes seeds comparable: which expert wins is arbitrary)."]
    args.out.write_text("\n".join(out) + "\n")
    print(f"wrote {args.out} in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
