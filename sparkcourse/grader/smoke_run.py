"""Run one authoring file as ``__main__`` and print its peak GPU memory as a JSON line at exit.

``python -m sparkcourse.grader.smoke_run authoring/NN-topic.py`` — what ``sparkcourse smoke`` runs per week. The
peak is the largest ``torch.cuda.max_memory_allocated()`` seen, also across the script's own
``reset_peak_memory_stats`` calls.
"""

from __future__ import annotations

import atexit
import json
import runpy
import signal
import sys

MARKER = "SPARKCOURSE_SMOKE "
_peak = [0]


def _torch():
    """torch if it is installed and sees a GPU, else None."""
    try:
        import torch
    except ImportError:  # pragma: no cover - a hard dependency
        return None
    return torch if torch.cuda.is_available() else None


def _watch_resets(torch) -> None:
    """Remember the peak before every ``reset_peak_memory_stats``, so the whole run's peak is reported."""
    original = torch.cuda.memory.reset_peak_memory_stats

    def reset(device=None):
        _peak[0] = max(_peak[0], torch.cuda.max_memory_allocated(device))
        return original(device)

    torch.cuda.reset_peak_memory_stats = torch.cuda.memory.reset_peak_memory_stats = reset


def _report() -> None:
    """The JSON line ``sparkcourse smoke`` reads: ``{"cuda": bool, "peak_bytes": int | null}``."""
    torch = sys.modules.get("torch")
    info = {"cuda": False, "peak_bytes": None}
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        info = {"cuda": True, "peak_bytes": max(_peak[0], torch.cuda.max_memory_allocated())}
    sys.stdout.flush()
    print(MARKER + json.dumps(info), flush=True)


def main(argv: list[str]) -> None:
    """Run ``argv[0]`` as a script (its own ``sys.argv``), reporting the GPU peak at exit."""
    path = argv[0]
    # a time limit interrupts the week with SIGINT: answer it even when started with SIGINT ignored (a background
    # job of a non-interactive shell), so the traceback and the GPU peak are still reported
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch = _torch()
    if torch is not None:
        _watch_resets(torch)
    atexit.register(_report)
    sys.argv = [path, *argv[1:]]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
