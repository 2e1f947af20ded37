"""Week 04 on CPU: what a reference model costs, and TRL's preference trainers on the tiny course LM.

    python benchmarks/preference_tiny.py --seeds 0 1 2 --out benchmarks/preference_tiny_cpu.md

(a) memory per component and step time of a DPO step (frozen reference) and a reference-free step
(SimPO/ORPO) on a small random Llama (``sparkcourse.labs.w04_preference.measure_step``);
(b) DPOTrainer, CPOTrainer (SimPO), ORPOTrainer and KTOTrainer on the course's sum preference pairs. First every
setting of ``--grid`` is trained (first seed) on the 300 training pairs and scored on the 100 **validation** pairs;
each method's best setting on validation (ranking accuracy, then exact match) is then trained with every seed and
scored **once** on the 100 test pairs (``sparkcourse.labs.w04_preference.run_method``, scoring with the reference
``sequence_logps``). The test pairs never choose anything.
Writes a markdown report and a PNG next to it (same name, ``.png``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sparkcourse.reference import w04_preference as ref  # the lab scores with week 04's answers
from sparkcourse.stats import mean_sd

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


DEFAULT_GRID = [
    "DPO:2e-4",
    "DPO:5e-4",
    "DPO:2e-3",
    "SimPO:2e-4",
    "SimPO:5e-4",
    "SimPO:2e-3",
    "ORPO:2e-4",
    "ORPO:5e-4",
    "ORPO:2e-3",
    "KTO:2e-4",
    "KTO:3e-4",
    "KTO:5e-4",
    "KTO:1e-3",
]


def parse_spec(spec: str, steps: int, beta: dict[str, float]) -> dict[str, Any]:
    """``METHOD:LR[:BETA[:STEPS]]`` into a setting (β and steps default to ``beta``/the lab's and ``steps``)."""
    from sparkcourse.labs import w04_preference as pl

    method, lr, *rest = spec.split(":")
    if method not in pl.METHODS:
        raise ValueError(f"unknown method {method!r} in {spec!r}")
    b = float(rest[0]) if rest else beta.get(method, pl.DEFAULT_BETA[method])
    return {"method": method, "lr": float(lr), "beta": b, "steps": int(rest[1]) if len(rest) > 1 else steps}


def choose(grid_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each method's best validation row: highest ranking accuracy, then exact match, then the earlier row."""
    best: dict[str, dict[str, Any]] = {}
    for r in grid_rows:
        key = (r["ranking acc"], r["exact match"])
        if r["method"] not in best or key > (best[r["method"]]["ranking acc"], best[r["method"]]["exact match"]):
            best[r["method"]] = r
    return best



def fmt_stat(x: float, sd: float | None = None) -> str:
    """A mean (± sd) of fractions as ``0.62 ± 0.03``."""
    return f"{x:.2f}" if sd is None else f"{x:.2f} ± {sd:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The markdown report from :func:`run`'s result."""
    from sparkcourse.labs import w04_preference as pl

    m = report["machine"]
    out = [
        "# Week 04: preference training on CPU (tiny course LM, TRL)",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['vcpus']} vCPUs, torch threads {m['threads']}; 1-minute load average "
        f"{m['load_start']:.2f} at the start and {m['load_end']:.2f} at the end. The machine is **shared** with "
        "other jobs, so times are pessimistic and noisy; memory counts and metrics do not depend on load.",
        f"- versions: torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}, python {m['python']}",
        f"- wall time of this run: {report['wall s'] / 60:.1f} min",
        "",
        "## (a) Memory of one training step, with and without a reference model",
        "",
        f"Small random Llama ({report['memory config']}), float32, AdamW. DPO: policy forward+backward on chosen "
        "and rejected rows, reference forward under `no_grad`. Reference-free (SimPO/ORPO): the policy only. "
        "Weights, gradients and AdamW state are the bytes of the real tensors; activations are the bytes "
        "autograd saves for backward (saved-tensor hooks, parameters excluded). Step time: median of "
        f"{report['memory steps']} steps after the first.",
        "",
        "| step | " + " | ".join(f"{k} (MB)" for k in pl.MEMORY_KEYS) + " | total (MB) | step (ms) |",
        "|---|" + "---|" * (len(pl.MEMORY_KEYS) + 2),
    ]
    mem = report["memory"]
    for name, r in mem.items():
        total = sum(r[k] for k in pl.MEMORY_KEYS)
        out.append(
            f"| {name} | "
            + " | ".join(f"{r[k] / 1e6:.2f}" for k in pl.MEMORY_KEYS)
            + f" | {total / 1e6:.2f} | {r['step s'] * 1e3:.1f} |"
        )
    s, ratios = pl.memory_summary(mem), report["step ratios"]
    out += [
        "",
        f"- reference-free / DPO memory: **{s['memory ratio']:.2f}** (weights, gradients and AdamW state only: "
        f'{s["memory ratio without activations"]:.2f}; "half" would be 0.50)',
        f"- reference-free / DPO step time: **{s['step ratio']:.2f}** in the table's run; over "
        f"{len(ratios)} repeats of the comparison: median **{statistics.median(ratios):.2f}**, "
        f"range {min(ratios):.2f}-{max(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)}; this machine, "
        "this load). The reference "
        'adds one forward pass; the rule of thumb "forward = a third of forward+backward" gives 0.75. Single '
        "ratios swing widely here because other jobs share the CPU: read the median",
        "- not counted: the transient logits and temporaries of the reference forward (freed at once), "
        "allocator overhead, the Python process",
        "",
        "## (b) TRL's trainers on verifiable preference pairs",
        "",
        f"Tiny course chat LM (365,280 parameters) trained from the same checkpoint for {report['steps']} steps of "
        f"{report['batch']} pairs (AdamW, linear decay; learning rate: "
        + ", ".join(f"{k} {v:g}" for k, v in report["lrs"].items())
        + "; β: "
        + ", ".join(f"{k} {v:g}" for k, v in report["betas"].items())
        + f"; SimPO γ 1.0, `cpo_alpha=0`; learning rates chosen on the validation pairs, see the tuning table) on "
        f"{report['train rows']} training pairs; scored once on the {report['test rows']} test pairs. "
        "**Ranking accuracy**: fraction of pairs whose correct answer has the higher length-averaged log-prob "
        "under the trained model (not TRL's `rewards/accuracies`, which compares DPO's implicit rewards "
        "β(log π − log π_ref) on training batches); **exact match**: greedy answer equals the correct sum. "
        "Cells are `ranking accuracy / exact match`; seeds change the trainer's data order (and KTO's unpairing).",
    ]
    for wording, table in report["training"].items():
        seeds = report["seeds by wording"][wording]
        out += [
            "",
            f"### Prompts in the {wording} wording ({report['wording help'][wording]})",
            "",
            "| method | "
            + " | ".join(f"seed {sd}" for sd in seeds)
            + (
                " | ranking acc (mean ± sd) | exact match (mean ± sd) | train s (mean) |"
                if len(seeds) > 1
                else " | ranking acc | exact match | train s |"
            ),
            "|---|" + "---|" * (len(seeds) + 3),
        ]
        for method, per_seed in table.items():
            acc = mean_sd([per_seed[sd]["ranking acc"] for sd in seeds])[: 2 if len(seeds) > 1 else 1]
            em = mean_sd([per_seed[sd]["exact match"] for sd in seeds])[: 2 if len(seeds) > 1 else 1]
            ts = mean_sd([per_seed[sd]["train s"] for sd in seeds])[0]
            cells = " | ".join(
                f"{per_seed[sd]['ranking acc']:.2f} / {per_seed[sd]['exact match']:.2f}" for sd in seeds
            )
            out.append(f"| {method} | {cells} | {fmt_stat(*acc)} | {fmt_stat(*em)} | {ts:.1f} |")
    if report.get("grid"):
        seed0 = report["seeds by wording"]["held-out"][0]
        chosen = {(m, report["lrs"][m], report["betas"][m]) for m in report["lrs"]}
        out += [
            "",
            f"### Tuning on the validation pairs (held-out wording, seed {seed0})",
            "",
            f"Every setting tried, trained on the {report['train rows']} training pairs and scored on the "
            f"{report['valid rows']} validation pairs (the last 100 of the shipped training file; never the test "
            "pairs). Each method's best row (ranking accuracy, then exact match) is marked **chosen**; only those "
            "settings were run on the test pairs above.",
            "",
            "| method | learning rate | β | steps | ranking acc (validation) | exact match (validation) | |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["grid"]:
            mark = "**chosen**" if (r["method"], r["lr"], r["beta"]) in chosen else ""
            out.append(
                f"| {r['method']} | {r['lr']:g} | {r['beta']:g} | {r['steps']} | {r['ranking acc']:.2f} | "
                f"{r['exact match']:.2f} | {mark} |"
            )
    if report.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    out += ["", f"Figure: `{report['png']}`.", ""]
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    """Memory bars and mean ± sd of both metrics per method and wording, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparkcourse.labs import w04_preference as pl

    wordings = list(report["training"])
    fig, axes = plt.subplots(1, 1 + len(wordings), figsize=(5 + 4.5 * len(wordings), 3.8))
    pl.plot_memory(axes[0], report["memory"])
    axes[0].set_title("one step, small random Llama", fontsize=9)
    for ax, wording in zip(axes[1:], wordings, strict=True):
        table, seeds = report["training"][wording], report["seeds by wording"][wording]
        xs = range(len(table))
        for off, key, label in ((-0.2, "ranking acc", "ranking accuracy"), (0.2, "exact match", "exact match")):
            stats = [mean_sd([r[sd][key] for sd in seeds]) for r in table.values()]
            ax.bar(
                [x + off for x in xs],
                [m for m, _ in stats],
                0.4,
                yerr=[e for _, e in stats],
                capsize=2,
                label=label,
            )
        ax.set_xticks(list(xs), [n.replace(" (no training)", "") for n in table], fontsize=8)
        ax.set_ylim(0, 1.2)
        ax.set_title(f"{wording} wording, {report['steps']} steps, {len(seeds)} seed(s)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run (a) and (b) and return everything the report needs."""
    import datasets
    import torch
    import transformers
    import trl

    from sparkcourse.gpu import cpu_model, load_average
    from sparkcourse.labs import w04_preference as pl

    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    machine = {
        "cpu": cpu_model(),
        "vcpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_start": load_average()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "python": platform.python_version(),
    }
    mem_kw = dict(hidden=192, layers=3, batch=4, length=48)
    answers = dict(logps=ref.sequence_logps, dpo_loss=ref.dpo_loss, simpo_loss=ref.simpo_loss)
    memory = pl.compare_memory(steps=args.memory_steps, **answers, **mem_kw)
    print(pl.format_memory(memory), flush=True)
    step_ratios = [pl.memory_summary(memory)["step ratio"]]
    for _ in range(args.timing_repeats - 1):  # time again: one pair of medians is noisy on a shared machine
        step_ratios.append(
            pl.memory_summary(pl.compare_memory(steps=args.memory_steps, **answers, **mem_kw))["step ratio"]
        )
    print("step-time ratios:", " ".join(f"{r:.2f}" for r in step_ratios), flush=True)
    # 1. tuning: every grid setting, first seed, scored on the validation pairs (held-out wording)
    settings: dict[str, dict[str, Any]] = {}
    grid_rows: list[dict[str, Any]] = []
    n_valid = 0
    grid = [parse_spec(spec, args.steps, args.beta) for spec in args.grid]
    grid = [g for g in grid if g["method"] in args.methods and g["method"] not in args.lr]
    if grid:
        train = pl.load_pairs("train", "held-out", chat=True, n=args.train_rows)
        valid = pl.load_pairs("validation", "held-out", n=args.test_rows)
        n_valid = len(valid)
        for g in grid:
            r = pl.run_method(g["method"], train, valid, steps=g["steps"], seed=args.seeds[0], learning_rate=g["lr"],
                              beta=g["beta"], logps=ref.sequence_logps, per_device_train_batch_size=args.batch)
            grid_rows.append({**g, **r})
            print(f"validation {g['method']:6s} lr {g['lr']:g} beta {g['beta']:g}: ranking acc "
                  f"{r['ranking acc']:.2f}, exact match {r['exact match']:.2f}", flush=True)
        settings.update({m: {k: r[k] for k in ("lr", "beta", "steps")} for m, r in choose(grid_rows).items()})
    for m in args.methods:  # methods without a grid row (or with --lr) keep the lab's defaults / the overrides
        settings.setdefault(m, {"lr": args.lr.get(m, pl.DEFAULT_LR[m]), "beta": args.beta.get(m, pl.DEFAULT_BETA[m]),
                                "steps": args.steps})
    # 2. the report: the chosen settings, every seed, scored once on the test pairs
    training: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    n_train = n_test = 0
    seeds_by = {w: (args.seeds if w == "held-out" else args.pretraining_seeds) for w in args.wordings}
    for wording in args.wordings:
        train = pl.load_pairs("train", wording, chat=True, n=args.train_rows)
        test = pl.load_pairs("test", wording, n=args.test_rows)
        n_train, n_test = len(train), len(test)
        base = pl.base_row(test, logps=ref.sequence_logps)
        table: dict[str, dict[int, dict[str, float]]] = {
            "base (no training)": {sd: base for sd in seeds_by[wording]}
        }
        for method in args.methods:
            table[method] = {}
            st = settings[method]
            for seed in seeds_by[wording]:
                r = pl.run_method(method, train, test, steps=st["steps"], seed=seed, learning_rate=st["lr"],
                                  beta=st["beta"], logps=ref.sequence_logps, per_device_train_batch_size=args.batch)
                table[method][seed] = r
                print(
                    f"test {wording:12s} {method:6s} seed {seed}: ranking acc {r['ranking acc']:.2f}, exact match "
                    f"{r['exact match']:.2f}, {r['train s']:.1f} s",
                    flush=True,
                )
        training[wording] = table
    machine["load_end"] = load_average()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": machine,
        "memory": memory,
        "memory config": "hidden {hidden}, {layers} layers, 8 heads / 4 KV heads, vocab 512, batch {batch} "
        "pairs of {length} tokens".format(**mem_kw),
        "memory steps": args.memory_steps,
        "step ratios": step_ratios,
        "training": training,
        "seeds by wording": seeds_by,
        "steps": args.steps,
        "batch": args.batch,
        "lrs": {m: settings[m]["lr"] for m in args.methods},
        "betas": {m: settings[m]["beta"] for m in args.methods},
        "train rows": n_train,
        "test rows": n_test,
        "wording help": {
            "held-out": '"Add 78 and 93." — never seen in pre-training',
            "pre-training": '"What is 78 + 93?" — as in pre-training, on other operand pairs',
        },
        "grid": grid_rows,
        "valid rows": n_valid,
        "notes": list(args.note or []),
        "wall s": time.perf_counter() - t_start,
    }


def parse_pairs(items: list[str]) -> dict[str, float]:
    """``METHOD=VALUE`` pairs into a dict."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, write the markdown and the PNG."""
    from sparkcourse.labs import w04_preference as pl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--pretraining-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds for the pre-training wording (saturated: a check, not the experiment)",
    )
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per trainer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="benchmarks/preference_tiny_cpu.md")
    parser.add_argument("--methods", nargs="+", default=list(pl.METHODS), choices=pl.METHODS)
    parser.add_argument("--wordings", nargs="+", default=list(pl.WORDINGS), choices=pl.WORDINGS)
    parser.add_argument("--lr", nargs="*", default=[], help="METHOD=VALUE overrides, e.g. KTO=2e-4")
    parser.add_argument("--beta", nargs="*", default=[], help="METHOD=VALUE overrides, e.g. DPO=0.1")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--train-rows", type=int, default=None, help="first N training pairs (default all)")
    parser.add_argument("--test-rows", type=int, default=None,
                        help="first N validation and test pairs (default all)")
    parser.add_argument("--memory-steps", type=int, default=10, help="timed steps of the memory comparison")
    parser.add_argument("--timing-repeats", type=int, default=5, help="repeats of the step-time comparison")
    parser.add_argument(
        "--grid",
        nargs="*",
        default=DEFAULT_GRID,
        help="METHOD:LR[:BETA[:STEPS]] settings tried on the validation pairs (first seed, held-out wording); "
        "each method's best is reported on test",
    )
    parser.add_argument("--note", action="append", help="a line for the report's Notes (repeatable)")
    args = parser.parse_args(argv)
    args.beta, args.lr = parse_pairs(args.beta), parse_pairs(args.lr)
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    command = "python benchmarks/preference_tiny.py " + " ".join(shlex.quote(a) for a in shown)
    out = Path(args.out)
    png = out.with_suffix(".png")
    report = run(args, command.strip())
    report["png"] = png.name
    plot(report, png)
    out.write_text(markdown(report))
    print(f"wrote {out} and {png} in {report['wall s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
