"""Week 03's SFT experiment on CPU, several seeds: full, LoRA, DoRA, LoRA+NEFTune of the tiny course Llama.

Usage: python benchmarks/sft_tiny.py [--seeds 0 1 2] [--steps 150] [--threads 1] [--eval-rows 120]
                                     [--out benchmarks/sft_tiny_cpu.md]
Runs ``sparkcourse.labs.w03_peft.run_sft_experiment`` once per seed and writes a markdown table (exact match per
seed, mean ± sd, trainable parameters, final loss, seconds) and, next to it, a PNG of the mean loss curves.
The machine may be shared: the file records the 1-minute load average at the start and the end.
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
from typing import Any

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing sparkcourse
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from sparkcourse.gpu import cpu_model, load_average  # noqa: E402
from sparkcourse.labs import w03_peft as sft_lab  # noqa: E402
from sparkcourse.stats import mean_sd  # noqa: E402


def versions() -> str:
    """Library versions that change the numbers."""
    import peft
    import transformers
    import trl

    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}"
    )


def _fmt_method(m: sft_lab.Method) -> str:
    """A method's settings in words."""
    kind = "full fine-tuning" if m.lora is None else ", ".join(f"{k}={v}" for k, v in m.lora.items())
    neft = f", NEFTune alpha {m.neftune:g}" if m.neftune is not None else ""
    return f"{kind}, lr {m.lr:g}{neft}"


def markdown(runs: list[dict[str, dict[str, Any]]], seeds: list[int], info: dict[str, Any]) -> str:
    """The results of ``runs`` (one ``run_sft_experiment`` dict per seed) as a markdown report."""
    methods = [name for name in runs[0] if name != sft_lab.BASE]
    base_em = runs[0][sft_lab.BASE]["em"] if sft_lab.BASE in runs[0] else float("nan")
    ref = "lora" if "lora" in methods else methods[0]
    ref_em = mean_sd([r[ref]["em"] for r in runs])[0]
    ref_cpu = mean_sd([r[ref]["cpu_seconds"] for r in runs])[0]
    seed_cols = " | ".join(f"EM seed {s}" for s in seeds)
    lines = [
        "# SFT of the tiny course Llama on CPU: full, LoRA, DoRA, LoRA+NEFTune (week 03, section 5)",
        "",
        f"- date: {info['date']}",
        f"- command: `{info['command']}`",
        f"- machine: {info['cpu']} ({info['vcpus']} vCPUs), torch CPU threads: {info['threads']}; the "
        f"machine is shared with other work, 1-minute load average {info['load_start']:.2f} at the start and "
        f"{info['load_end']:.2f} at the end, so the seconds are pessimistic and only comparable within this "
        "file",
        f"- total wall time: {info['wall'] / 60:.1f} min",
        f"- {versions()}",
        f"- data: tasks {', '.join(info['tasks'])} (never seen in pre-training); {info['train_rows']} "
        f"training rows, exact match (greedy, whole answer) on the same {info['eval_rows']} held-out test "
        "rows for every seed",
        f"- training: {info['steps']} steps of {sft_lab.BATCH_SIZE} rows, constant learning rate, AdamW, "
        f"float32, loss on completion tokens, logged every {info['logging_steps']} steps; the seed sets the "
        "LoRA initialisation and the order of the training rows",
    ]
    for name in methods:
        lines.append(f"  - `{name}`: {_fmt_method(info['methods'][name])}")
    lines += [
        "",
        f"Exact match of the model before fine-tuning: **{base_em:.3f}** (greedy decoding is deterministic, "
        "so it is the same for every seed).",
        "",
        f"| method | trainable params | {seed_cols} | EM mean ± sd | EM − {ref} (mean) "
        "| final train loss (mean) | wall s per run (mean) | CPU s per run (mean) "
        f"| CPU time vs {ref} |",
        "|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|---|",
    ]
    for name in methods:
        ems = [r[name]["em"] for r in runs]
        mean, sd = mean_sd(ems)
        loss = mean_sd([r[name]["losses"][-1][1] for r in runs if r[name]["losses"]])[0]
        secs = mean_sd([r[name]["seconds"] for r in runs])[0]
        cpu = mean_sd([r[name]["cpu_seconds"] for r in runs])[0]
        trainable = runs[0][name]["trainable"]
        per_seed = " | ".join(f"{e:.3f}" for e in ems)
        lines.append(
            f"| {name} | {trainable:,} | {per_seed} | {mean:.3f} ± {sd:.3f} | {mean - ref_em:+.3f} "
            f"| {loss:.3f} | {secs:.1f} | {cpu:.1f} | {cpu / ref_cpu:.2f}× |"
        )
    tasks = list(runs[0][methods[0]]["em_by_task"])
    big_noise = sft_lab.neftune_noise_rms(info["neftune_alpha"], 512, 4096)
    lines += [
        "",
        "Exact match by task, mean ± sd over the seeds (test rows per task: "
        + ", ".join(f"{t} {info['task_rows'][t]}" for t in tasks)
        + "):",
        "",
        "| method | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for name in ([sft_lab.BASE] if sft_lab.BASE in runs[0] else []) + methods:
        cells = []
        for t in tasks:
            mean, sd = mean_sd([r[name]["em_by_task"][t] for r in runs if name in r])
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "sd is the sample standard deviation over the seeds. Final train loss: mean over seeds of the last "
        "logged loss (a mean over the last logging window). Seconds are those of `trainer.train()`: "
        "wall-clock, and the process's CPU time, the steadier measure on a shared machine (with one torch "
        "thread, wall-clock minus CPU time is mostly time spent waiting for a core). The `lora+neftune` loss "
        "is measured with the noise on (training mode), so it is not comparable with the others' loss; its "
        "exact match is measured without noise, like every other row.",
        "",
        f"NEFTune scale on this model: embedding elements have RMS {info['emb_rms']:.4f}; with alpha "
        f"{info['neftune_alpha']:g}, width d = {info['dim']} and a mean padded batch length L = "
        f"{info['seq_len']:.1f} tokens, the noise Uniform(±alpha/√(Ld)) has RMS {info['noise_rms']:.4f}, "
        f"{info['noise_rms'] / info['emb_rms']:.2f}× the embeddings' own RMS. At a 7B-class width d = 4096 "
        f"and L = 512 tokens the same alpha gives noise RMS {big_noise:.4f}, "
        f"{info['noise_rms'] / big_noise:.0f}× less than here.",
        "",
        f"![mean training loss per method]({info['png']})",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: less disturbed by other jobs)"
    )
    p.add_argument("--eval-rows", type=int, default=120)
    p.add_argument("--train-rows", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=list(sft_lab.METHODS), choices=list(sft_lab.METHODS))
    p.add_argument("--out", type=Path, default=Path("benchmarks/sft_tiny_cpu.md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run every seed, write the markdown file and the PNG next to it; returns the markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    from sparkcourse import datasets_course, models

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/sft_tiny.py", *(sys.argv[1:] if argv is None else argv)])
    load_start, t0 = load_average()[0], time.perf_counter()
    runs = []
    for i, seed in enumerate(args.seeds):
        runs.append(
            sft_lab.run_sft_experiment(
                args.methods,
                steps=args.steps,
                seed=seed,
                eval_rows=args.eval_rows,
                train_rows=args.train_rows,
                logging_steps=args.logging_steps,
                base=i == 0,
                verbose=True,
            )
        )
    wall, load_end = time.perf_counter() - t0, load_average()[0]

    model, tok = models.load_tiny_lm()
    train, test = sft_lab.sft_data(args.eval_rows, args.train_rows)
    alpha = sft_lab.METHODS["lora+neftune"].neftune
    dim = model.config.hidden_size
    seq_len = sft_lab.mean_padded_length(tok, train)
    emb_rms = float(model.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    out_md = args.out
    out_png = out_md.with_suffix(".png")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    fig = sft_lab.plot_losses(runs, title=f"SFT of the tiny course model on CPU, mean of {len(runs)} seed(s)")
    fig.savefig(out_png, dpi=110)
    info = dict(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        cpu=cpu_model(),
        vcpus=os.cpu_count(),
        threads=torch.get_num_threads(),
        load_start=load_start,
        load_end=load_end,
        wall=wall,
        tasks=datasets_course.HELD_OUT_TASKS,
        train_rows=len(train),
        eval_rows=len(test),
        steps=args.steps,
        logging_steps=args.logging_steps,
        methods=sft_lab.METHODS,
        emb_rms=emb_rms,
        task_rows={t: test["task"].count(t) for t in sorted(set(test["task"]))},
        neftune_alpha=alpha,
        dim=dim,
        seq_len=seq_len,
        noise_rms=sft_lab.neftune_noise_rms(alpha, seq_len, dim),
        png=out_png.name,
    )
    out_md.write_text(markdown(runs, args.seeds, info))
    print(out_md.read_text())
    return out_md


if __name__ == "__main__":
    main()
