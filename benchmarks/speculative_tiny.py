"""Speculative decoding and Medusa on the tiny course LM (``sparkcourse.speculative``), CPU or GPU.

    python benchmarks/speculative_tiny.py --out benchmarks/speculative_tiny_cpu.md
    python benchmarks/speculative_tiny.py --device cuda --out benchmarks/speculative_tiny_h200.md

Two workloads on the first ``--prompts`` prompts of the course's instruct test split (chat template):
"answers" (greedy until the end of turn, at most ``--max-new`` tokens: the tiny LM's answers are short) and
"free-running" (exactly ``--max-new`` tokens, running past the end of turn). For several self-speculative drafts
(the target's first layers, or layer 1 skipped) and gamma = 1..``--gammas``: acceptance alpha (accepted / tested
draft tokens), tokens per target call measured and from (1 - a^(g+1)) / (1 - a), the cost ratio
c = draft call / target call (one-token decode steps, medians), the predicted speed-up (Leviathan et al.) and the
measured wall time against a plain greedy loop with a KV cache. Then Medusa heads trained on the frozen model's own
greedy outputs (training prompts) and decoded with greedy and typical acceptance: tokens per forward pass vs the
draft-model approach. Greedy outputs are checked token for token against the plain loop. Writes markdown.
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

import torch
import transformers

from sparkcourse import speculative as sp
from sparkcourse.datasets_course import load_instruct
from sparkcourse.models import chat_prompt, load_tiny_lm

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def greedy_kv(model, ids: torch.Tensor, max_new: int, stop_at_eos: bool) -> torch.Tensor:
    """Plain greedy decoding with a KV cache: one forward pass per token (the baseline)."""
    cache = transformers.DynamicCache()
    eos = model.generation_config.eos_token_id if stop_at_eos else None
    seq = ids
    feed = ids
    for _ in range(max_new):
        nxt = model(feed, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], 1)
        feed = nxt
        if eos is not None and int(nxt) == eos:
            break
    return seq


@torch.no_grad()
def step_cost(model, ids: torch.Tensor, n_tokens: int, reps: int, device: torch.device) -> float:
    """Median seconds of one decode call feeding ``n_tokens`` tokens after a cached prompt."""
    times = []
    for _ in range(reps):
        cache = transformers.DynamicCache()
        model(ids, past_key_values=cache, use_cache=True)
        x = torch.full((1, n_tokens), 7, device=device)
        sync(device)
        t0 = time.perf_counter()
        model(x, past_key_values=cache, use_cache=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed(fn, device):
    """(result, seconds) of fn() with the device synchronised."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def sampling_step(p, q, draft, gen):
    """Speculative sampling (Leviathan et al. 2023), for the benchmark's sampled-acceptance column only."""
    out = []
    for i, x in enumerate(draft.tolist()):
        if torch.rand((), generator=gen, device=p.device) < torch.clamp(p[i, x] / q[i, x], max=1.0):
            out.append(x)
            continue
        r = torch.clamp(p[i] - q[i], min=0.0)
        out.append(int(torch.multinomial(r / r.sum(), 1, generator=gen)))
        return out
    out.append(int(torch.multinomial(p[-1], 1, generator=gen)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--gammas", type=int, default=5)
    ap.add_argument("--drafts", default="1,2,3,0+2+3", help="comma list: N (first N layers) or i+j+k (those layers)")
    ap.add_argument("--medusa-heads", type=int, default=3)
    ap.add_argument("--medusa-steps", type=int, default=100)
    ap.add_argument("--medusa-train-prompts", type=int, default=80)
    ap.add_argument("--machine", default=None, help="default: '2-vCPU AMD EPYC, shared' on CPU, the GPU name on CUDA")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    start = time.time()
    load0 = os.getloadavg()[0]
    model, tok = load_tiny_lm()
    model.to(device)
    test = load_instruct("test")
    prompts = [tok(chat_prompt(tok, test[i]["prompt"]), return_tensors="pt", add_special_tokens=False).input_ids
               .to(device) for i in range(args.prompts)]
    workloads = {"answers": True, "free-running": False}
    lines: list[str] = []

    # baselines
    base: dict[str, tuple[list[torch.Tensor], float, int]] = {}
    for wl, eos in workloads.items():
        greedy_kv(model, prompts[0], 4, eos)  # warm-up
        outs, secs = timed(lambda eos=eos: [greedy_kv(model, p, args.max_new, eos) for p in prompts], device)
        n_new = sum(o.shape[1] - p.shape[1] for o, p in zip(outs, prompts, strict=True))
        base[wl] = (outs, secs, n_new)
    t_target = step_cost(model, prompts[0], 1, 30, device)

    drafts = {}
    for spec in args.drafts.split(","):
        layers = int(spec) if "+" not in spec else tuple(int(x) for x in spec.split("+"))
        name = f"first {layers} layer(s)" if isinstance(layers, int) else f"layers {'+'.join(map(str, layers))}"
        drafts[name] = sp.make_draft(model, layers)

    lines += ["## Cost of one decode call (one token after a cached prompt, median of 30)", "",
              "| model | layers | ms per call | c = draft / target |", "|---|---|---|---|",
              f"| target | 4 | {1e3 * t_target:.3f} | 1 |"]
    cost = {}
    for name, d in drafts.items():
        cost[name] = step_cost(d, prompts[0], 1, 30, device)
        lines.append(f"| draft: {name} | {d.config.num_hidden_layers} | {1e3 * cost[name]:.3f} | "
                     f"{cost[name] / t_target:.2f} |")
    verify = {g: step_cost(model, prompts[0], g + 1, 30, device) for g in (1, 3, 6) if g <= args.gammas}
    lines += ["", "Target call feeding gamma + 1 tokens (verification): " + ", ".join(
        f"gamma {g}: {1e3 * t:.3f} ms ({t / t_target:.2f}x a one-token call)" for g, t in verify.items()), ""]

    summary = []
    for wl, eos in workloads.items():
        outs, base_s, n_new = base[wl]
        lines += [f"## Draft model, workload \"{wl}\" ({n_new} tokens over {len(prompts)} prompts; plain greedy "
                  f"with a KV cache: {base_s:.2f} s, {1e3 * base_s / n_new:.2f} ms/token)", "",
                  "| draft | gamma | alpha | tokens / target call | formula (1-a^(g+1))/(1-a) | formula with alpha of "
                  "gamma 1 | tokens kept / target call | predicted speed-up (c measured) | measured speed-up (wall) | "
                  "target calls | draft calls | identical |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, d in drafts.items():
            c = cost[name] / t_target
            best = None
            alpha1 = None
            for g in range(1, args.gammas + 1):
                res, secs = timed(lambda d=d, g=g, eos=eos: [sp.draft_generate(model, d, p, g, args.max_new,
                                                                              stop_at_eos=eos) for p in prompts],
                                  device)
                tc = sum(s.target_calls for _, s in res)
                dc = sum(s.draft_calls for _, s in res)
                acc = sum(s.accepted for _, s in res)
                rej = sum(s.rejections for _, s in res)
                prod = sum(s.produced for _, s in res)
                alpha = acc / (acc + rej) if acc + rej else float("nan")
                same = all(torch.equal(o, r) for (o, _), r in zip(res, outs, strict=True))
                formula = sp.expected_tokens_per_call(alpha, g)
                alpha1 = alpha if alpha1 is None else alpha1
                pred = sp.expected_speedup(alpha, g, c)
                meas = base_s / secs
                lines.append(f"| {name} | {g} | {alpha:.3f} | {prod / tc:.2f} | {formula:.2f} | "
                             f"{sp.expected_tokens_per_call(alpha1, g):.2f} | {n_new / tc:.2f} | {pred:.2f} | "
                             f"{meas:.2f} | {tc} | {dc} | {'yes' if same else 'NO'} |")
                if best is None or pred > best[1]:
                    best = (g, pred, meas)
            summary.append(f"- {wl}, draft {name}: best gamma by the cost model = {best[0]} (predicted "
                           f"{best[1]:.2f}x, measured {best[2]:.2f}x)")
        lines.append("")

    # sampled acceptance (temperature 1) for one draft: alpha differs from the greedy one
    name = list(drafts)[-1]
    gen = torch.Generator(device=device).manual_seed(0)
    res = [sp.draft_generate(model, drafts[name], p, 3, args.max_new, step=sampling_step, greedy=False,
                             generator=gen, stop_at_eos=False) for p in prompts]
    acc = sum(s.accepted for _, s in res)
    rej = sum(s.rejections for _, s in res)
    tc = sum(s.target_calls for _, s in res)
    alpha_s = acc / (acc + rej)
    lines += [f"Sampled decoding (temperature 1, speculative sampling, draft {name}, gamma 3, free-running): "
              f"alpha {alpha_s:.3f}, tokens per target call {sum(s.produced for _, s in res) / tc:.2f}, formula "
              f"{sp.expected_tokens_per_call(alpha_s, 3):.2f}.", ""]

    # Medusa
    train = load_instruct("train")
    tprompts = [tok(chat_prompt(tok, train[i]["prompt"]), return_tensors="pt", add_special_tokens=False).input_ids
                .to(device) for i in range(args.medusa_train_prompts)]
    texts, gen_s = timed(lambda: [greedy_kv(model, p, args.max_new, False)[0] for p in tprompts], device)
    heads, train_s = timed(lambda: sp.train_medusa_heads(model, texts, args.medusa_heads, args.medusa_steps,
                                                          seed=0), device)
    n_par = sum(p.numel() for p in heads.parameters())
    tree = sp.default_tree(args.medusa_heads)
    lines += [f"## Medusa ({args.medusa_heads} heads, {n_par:,} parameters, trained {args.medusa_steps} steps on "
              f"the frozen model's greedy outputs for {len(tprompts)} training prompts: {train_s:.1f} s, data "
              f"{gen_s:.1f} s; tree of {len(tree) + 1} nodes {tree})", "",
              "| workload | acceptance | tokens / forward pass | tokens kept / forward pass | mean accepted per tree "
              "pass | forward passes | measured speed-up (wall) | identical to greedy |",
              "|---|---|---|---|---|---|---|---|"]
    for wl, eos in workloads.items():
        outs, base_s, _ = base[wl]
        for mode, kw in (("greedy", {}), ("typical (0.09, 0.3, T 0.7)", {"greedy": False})):
            res, secs = timed(lambda eos=eos, kw=kw: [sp.medusa_generate(model, heads, p, args.max_new,
                                                                         stop_at_eos=eos, **kw) for p in prompts],
                              device)
            fp = sum(s.forward_passes for _, s in res)
            prod = sum(s.produced for _, s in res)
            acc = [a for _, s in res for a in s.accept_lengths]
            same = sum(torch.equal(o, r) for (o, _), r in zip(res, outs, strict=True))
            kept = sum(s.new_tokens for _, s in res)
            lines.append(f"| {wl} | {mode} | {prod / fp:.2f} | {kept / fp:.2f} | "
                         f"{statistics.mean(acc) if acc else 0:.2f} | {fp} | "
                         f"{base_s / secs:.2f} | {same}/{len(prompts)} |")
    lines.append("")

    machine = args.machine or ("2-vCPU AMD EPYC, shared" if device.type == "cpu" else "GPU")
    header = [
        "# Speculative decoding and Medusa on the tiny course LM",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- command: `python {shlex.join(['benchmarks/speculative_tiny.py', *sys.argv[1:]])}`",
        f"- machine: {machine} ({platform.machine()}); device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", torch threads {args.threads}")
        + f"; 1-minute load average {load0:.2f} at the start and {os.getloadavg()[0]:.2f} at the end",
        f"- versions: torch {torch.__version__}, transformers {transformers.__version__}, python "
        f"{platform.python_version()}",
        f"- wall time of this run: {time.time() - start:.0f} s",
        "- alpha = accepted / tested draft tokens (tokens after a rejection are not tested); tokens per target call "
        "count the prefill, which is also the first verification, and the tokens each step yields before the cut "
        "at the end of turn / max tokens (the formula's quantity); 'kept' counts only the tokens returned; speed-ups are wall-time ratios to the plain "
        "greedy loop on the same prompts (noisy on a shared machine); 'identical' = same tokens as that loop. "
        "The 'formula' column uses the alpha measured in the same runs, so agreement there checks the geometric "
        "(i.i.d. acceptance) model; the column with gamma 1's alpha is the out-of-sample prediction",
        "",
        "## Summary",
        "",
        *summary,
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
