"""Hub models and data sets for the ``spark`` profile's cells: the real thing, a labelled stand-in, or a skip.

- :func:`causal_lm` and :func:`cross_encoder` load a model from the Hugging Face Hub. With
  ``SPARKCOURSE_STANDIN=1`` they build the same architecture from a config shipped in
  ``sparkcourse/data/configs/`` with random (seeded) weights instead, layer-reduced when the full model would not
  fit in free memory; the label they return says which one you got.
- :func:`dataset` loads a hub data set, or the course's shipped data (stand-in mode, or the hub data cannot be had).
- A model that cannot be had raises :class:`Unavailable` (what, and how to fix it); :func:`report` prints the
  ``SKIPPED:`` line a cell prints before it skips. Nothing here forces offline mode.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

STANDIN_ENV = "SPARKCOURSE_STANDIN"
DATA = Path(__file__).resolve().parent / "data"
CONFIG_DIR = DATA / "configs"
COURSE_TOKENIZER = DATA / "tiny_lm"
FREE_FRACTION = 0.8  # of the free memory a stand-in's weights may take; the rest is for activations and optimiser
STANDIN_HINT = f"or rerun with {STANDIN_ENV}=1 for a random-weight stand-in"


def standin() -> bool:
    """True when ``SPARKCOURSE_STANDIN=1``: build hub models from shipped configs with random weights."""
    return os.environ.get(STANDIN_ENV, "").strip() == "1"


class Unavailable(RuntimeError):
    """A model or data set that cannot be had here: ``what`` it is and how to ``fix`` it."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what} — {fix}")
        self.what, self.fix = what, fix


def report(exc: Unavailable) -> None:
    """Print the one honest line a skipping cell prints: ``SKIPPED: <what> — <fix>``."""
    print(f"SKIPPED: {exc.what} — {exc.fix}")


def load_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "could not download or find it" (network, login, licence, offline, missing files)."""
    errors: list[type[BaseException]] = [OSError, ValueError, ImportError]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [getattr(hf_errors, n) for n in ("HTTPError", "EntryNotFoundError") if hasattr(hf_errors, n)]
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from datasets.exceptions import DatasetsError

        errors.append(DatasetsError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        errors.append(torch.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(errors)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def fix_for(model_id: str, exc: BaseException) -> str:
    """How to get ``model_id`` after ``exc``: log in, accept the licence, the network, or the stand-in mode."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    page = f"https://huggingface.co/{model_id}"
    if names & {"OutOfMemoryError"} or "out of memory" in text:
        return f"not enough free memory: close other notebooks and kernels, {STANDIN_HINT} (layer-reduced to fit)"
    if isinstance(exc, ImportError):
        return f"a package is missing ({exc}): pip install -e \".[spark]\", {STANDIN_HINT}"
    offline = [f for f in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
               if os.environ.get(f, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline or "OfflineModeIsEnabled" in names:
        flags = " and ".join(offline) or "HF_HUB_OFFLINE"
        return (f"offline mode is on ({flags}) and it is not in the local cache: unset {flags} (the spark "
                f"profile may download), {STANDIN_HINT}")
    if "GatedRepoError" in names or "gated" in text or "restricted" in text:
        return f"accept the licence on the model page ({page}) and log in with `hf auth login`, {STANDIN_HINT}"
    if "RepositoryNotFoundError" in names or "401" in text or "not a valid model identifier" in text:
        return (f"check the id; if it is gated, log in with `hf auth login` and accept the licence on {page}, "
                f"{STANDIN_HINT}")
    if names & {"ConnectionError", "ConnectError", "TimeoutError", "ConnectTimeout"} or "connect" in text:
        return f"check the network (https://huggingface.co must be reachable), {STANDIN_HINT}"
    return (f"log in with `hf auth login`, accept the licence on the model page ({page}), check the network, "
            f"{STANDIN_HINT}")


def _unavailable(what: str, exc: BaseException) -> Unavailable:
    """An Unavailable for ``what`` (a hub id) after ``exc``."""
    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    return Unavailable(f"{what} could not be loaded ({type(exc).__name__}: {reason})", fix_for(what, exc))


# --- stand-ins ---------------------------------------------------------------------------------------------


def config_path(model_id: str) -> Path:
    """Where the shipped config of ``org/name`` lives: ``sparkcourse/data/configs/org--name.json``."""
    return CONFIG_DIR / (model_id.replace("/", "--") + ".json")


def shipped_configs() -> dict[str, dict]:
    """Every shipped config by hub id (the ``_source`` key says where its values come from)."""
    return {p.stem.replace("--", "/", 1): json.loads(p.read_text()) for p in sorted(CONFIG_DIR.glob("*.json"))}


def shipped_config(model_id: str) -> dict:
    """The shipped ``config.json`` values of ``model_id``; Unavailable if the course ships none."""
    path = config_path(model_id)
    if not path.exists():
        known = ", ".join(shipped_configs()) or "none"
        raise Unavailable(f"no stand-in for {model_id} (no config in sparkcourse/data/configs/)",
                          f"unset {STANDIN_ENV} to load the real model, or ship its config.json there "
                          f"(shipped: {known})")
    return json.loads(path.read_text())


def make_config(values: dict, **overrides):
    """A transformers config from shipped values (keys starting with ``_`` dropped) and overrides."""
    from transformers import AutoConfig

    values = {k: v for k, v in values.items() if not k.startswith("_")} | overrides
    return AutoConfig.for_model(values.pop("model_type"), **values)


def meta_params(config, auto_cls=None) -> int:
    """Parameter count of the model ``config`` describes, built on the meta device (no memory, no time)."""
    import torch

    if auto_cls is None:
        from transformers import AutoModelForCausalLM as auto_cls
    with torch.device("meta"):
        model = auto_cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


def layers_that_fit(values: dict, budget_bytes: float | None, bytes_per_param: float, auto_cls=None) -> int:
    """How many of the config's ``num_hidden_layers`` fit in ``budget_bytes`` (all when the budget is None).

    Parameters of one and two layers, counted on the meta device, give the embeddings/head and the per-layer
    size; 0 means not even one layer fits.
    """
    full = int(values["num_hidden_layers"])
    if budget_bytes is None:
        return full
    one, two = (meta_params(make_config(values, num_hidden_layers=n), auto_cls) for n in (1, 2))
    per_layer, rest = two - one, 2 * one - two
    return max(0, min(full, int((budget_bytes / bytes_per_param - rest) // per_layer)))


def _require_device(model_id: str, device) -> None:
    """Unavailable when a cell asks for a GPU this machine does not have (the spark profile forced on a CPU)."""
    import torch

    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        raise Unavailable(f"{model_id} on {device}: this machine has no CUDA GPU",
                          "run it on a DGX Spark (or any CUDA machine); on a CPU use SPARKCOURSE_PROFILE=tiny")


def _device_name(device) -> str:
    """``cuda``/``cpu``/… for a device or device_map argument (``auto``: the GPU when there is one)."""
    import torch

    if device in (None, "auto"):
        return "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
    return str(device)


def free_bytes(device: str) -> int | None:
    """Free memory for a model on ``device``: CUDA's free memory (on a unified-memory Spark, at least
    /proc/meminfo's MemAvailable: cudaMemGetInfo under-reports there), else the system's available memory."""
    import torch

    from sparkcourse import gpu

    available = gpu.meminfo_bytes("MemAvailable")
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(free, available or 0) if gpu.detect().unified else free
    return available


def _dtype_bytes(dtype, values: dict) -> int:
    """Bytes per element of ``dtype`` (None/"auto": the config's own dtype)."""
    import torch

    if dtype in (None, "auto"):
        dtype = values.get("dtype") or values.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.empty((), dtype=dtype).element_size()


def _standin_tokenizer(model_id: str):
    """The model's own tokenizer if it is in the local Hugging Face cache, else the course tokenizer."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_id, local_files_only=True), "its own tokenizer (cached)"
    except load_errors():
        return AutoTokenizer.from_pretrained(str(COURSE_TOKENIZER)), "the course tokenizer"


def causal_lm(model_id: str, dtype=None, device: str | None = None, *, max_bytes: float | None = None,
              seed: int = 0, **kw):
    """``(model, tokenizer, label)`` for a hub causal LM, in eval mode; ``Unavailable`` if it cannot be had.

    ``device`` is passed as ``device_map`` (``"cuda"``), ``kw`` to ``from_pretrained`` (``quantization_config``…).
    With ``SPARKCOURSE_STANDIN=1``: the shipped config's architecture with random weights (seed ``seed``), as
    many layers as fit in ``max_bytes`` (default: 80% of the free memory of ``device``).
    """
    device = kw.pop("device_map", device)
    kw = {k: v for k, v in kw.items() if v is not None}  # quantization_config=None: a plain load
    _require_device(model_id, device)
    if standin():
        try:
            return _standin_lm(model_id, dtype, device, max_bytes, seed, **kw)
        except Unavailable:
            raise
        except load_errors() as exc:
            raise _standin_failed(model_id, exc) from exc
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_id)
        if dtype is not None:
            kw["dtype"] = dtype
        if device is not None:
            kw["device_map"] = device
        model = AutoModelForCausalLM.from_pretrained(model_id, **kw)
    except load_errors() as exc:
        raise _unavailable(model_id, exc) from exc
    if tokenizer.pad_token is None:  # many chat models ship without one; batched generation needs it
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, f"{model_id}: pretrained weights"


def _standin_failed(model_id: str, exc: BaseException) -> Unavailable:
    """An Unavailable for a stand-in that could not be built (memory, a missing package, a file)."""
    import torch

    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    if isinstance(exc, torch.OutOfMemoryError):
        fix = "free memory (close other kernels and notebooks) or pass a smaller max_bytes"
    elif isinstance(exc, ImportError):
        fix = f"a package is missing: pip install -e \".[spark]\", or unset {STANDIN_ENV} to load the real model"
    else:
        fix = f"unset {STANDIN_ENV} to load the real model"
    return Unavailable(f"stand-in of {model_id} could not be built ({type(exc).__name__}: {reason})", fix)


def _standin_lm(model_id: str, dtype, device, max_bytes, seed: int, **kw):
    """The random-weight stand-in of :func:`causal_lm`."""
    import torch
    from transformers import AutoModelForCausalLM

    values = shipped_config(model_id)
    where = _device_name(device)
    budget = max_bytes if max_bytes is not None else _scaled(free_bytes(where), FREE_FRACTION)
    full = int(values["num_hidden_layers"])
    layers = layers_that_fit(values, budget, _dtype_bytes(dtype, values))
    if layers < 1:
        raise Unavailable(f"stand-in of {model_id}: not even one layer fits in {budget / 1e9:.1f} GB",
                          "free memory (close other kernels) or pass a larger max_bytes")
    config = make_config(values, num_hidden_layers=layers)
    build = {} if dtype in (None, "auto") else {"dtype": dtype}
    torch.manual_seed(seed)
    with torch.device(where):
        model = AutoModelForCausalLM.from_config(config, **build, **_from_config_kw(kw))
    if kw:  # from_pretrained-only options (quantization_config …): go through a saved copy, as a real load does
        with tempfile.TemporaryDirectory(prefix="sparkcourse-standin-") as tmp:
            model.save_pretrained(tmp)
            del model
            if where.startswith("cuda"):
                torch.cuda.empty_cache()
            model = AutoModelForCausalLM.from_pretrained(tmp, device_map=device, **build, **kw)
    tokenizer, tok_note = _standin_tokenizer(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for cfg in (model.config, getattr(model, "generation_config", None)):  # special tokens: the stand-in's tokenizer
        if cfg is None:
            continue
        cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = (tokenizer.pad_token_id, tokenizer.bos_token_id,
                                                                tokenizer.eos_token_id)
    n = meta_params(config)  # the architecture's count (a 4-bit model packs two weights per stored element)
    label = (f"stand-in: {model_id} architecture, random weights, {layers} of {full} layers "
             f"({_millions(n)} parameters), {tok_note}")
    return model.eval(), tokenizer, label


def _from_config_kw(kw: dict) -> dict:
    """Take the options ``from_config`` understands out of ``kw`` (what is left needs ``from_pretrained``)."""
    return {k: kw.pop(k) for k in ("attn_implementation",) if k in kw}


def _millions(n: int) -> str:
    """``8.03B`` or ``0.5M``: a parameter count for a label."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _scaled(value: float | None, factor: float) -> float | None:
    """``value * factor``, None for None."""
    return None if value is None else value * factor


def cross_encoder(model_id: str, device: str | None = None, *, seed: int = 0, **kw):
    """``(CrossEncoder, label)`` from sentence-transformers; ``Unavailable`` if it cannot be had.

    With ``SPARKCOURSE_STANDIN=1``: a random-weight BERT-style sequence classifier from the shipped config,
    with all-MiniLM-L6-v2's tokenizer as the course ships it (``data/minilm_tokenizer``: the same uncased BERT
    vocabulary; no package needed).
    """
    from sentence_transformers import CrossEncoder

    _require_device(model_id, device)
    if not standin():
        try:
            return CrossEncoder(model_id, device=device, **kw), f"{model_id}: pretrained weights"
        except load_errors() as exc:
            raise _unavailable(model_id, exc) from exc
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sparkcourse.embeddings import TOKENIZER_DIR

    values = shipped_config(model_id)
    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_config(make_config(values))
        with tempfile.TemporaryDirectory(prefix="sparkcourse-standin-") as tmp:
            model.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(TOKENIZER_DIR)).save_pretrained(tmp)
            ce = CrossEncoder(tmp, device=device, **kw)
    except load_errors() as exc:
        raise _standin_failed(model_id, exc) from exc
    layers = values["num_hidden_layers"]
    return ce, (f"stand-in: {model_id} architecture, random weights, {layers} of {layers} layers, "
                "the all-MiniLM-L6-v2 tokenizer (same vocabulary)")


def dataset(name: str, split: str, fallback: Callable[[], object], about: str = "the course's shipped data",
            **kw):
    """``(data, label)``: ``datasets.load_dataset(name, split=split)``, or ``fallback()`` (the shipped course
    data, described by ``about``) in stand-in mode or when the hub data set cannot be had."""
    if standin():
        return fallback(), f"stand-in: {about} instead of {name}"
    try:
        import datasets

        return datasets.load_dataset(name, split=split, **kw), f"{name} ({split})"
    except load_errors() as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:120]
        return fallback(), f"{name} unavailable ({type(exc).__name__}: {reason}); {about} instead"
