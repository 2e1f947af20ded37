"""Course profiles: ``tiny`` (CPU, tiny models, seconds; always used when grading) or ``spark`` (a CUDA GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

PROFILES = ("tiny", "spark")


@dataclass(frozen=True)
class Profile:
    """What a notebook should do at this profile: sizes, models, whether to benchmark."""

    name: str

    @property
    def is_spark(self) -> bool:
        """True for the full-size GPU profile."""
        return self.name == "spark"

    def pick(self, tiny, spark):
        """Return ``tiny`` or ``spark`` depending on the profile (sizes, model ids, step counts)."""
        return spark if self.is_spark else tiny


def grading() -> bool:
    """True while nbgrader executes the notebook (it sets ``NBGRADER_EXECUTION``)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def current() -> Profile:
    """The active profile: ``SPARKCOURSE_PROFILE`` if set, ``tiny`` when grading or without CUDA, else ``spark``."""
    name = os.environ.get("SPARKCOURSE_PROFILE", "").strip().lower()
    if name:
        if name not in PROFILES:
            raise ValueError(f"SPARKCOURSE_PROFILE={name!r}: expected one of {PROFILES}")
        return Profile(name)
    if grading():
        return Profile("tiny")
    return Profile("spark" if _cuda_available() else "tiny")


OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_if_tiny(prof: Profile | None = None) -> bool:
    """Set the Hugging Face offline flags in the ``tiny`` profile only (a user's own setting stays).

    ``spark`` is allowed to download: forcing offline there makes every hub model and data set fail.
    Returns True when the profile is ``tiny``.
    """
    if (prof or current()).is_spark:
        return False
    for flag in OFFLINE_FLAGS:
        os.environ.setdefault(flag, "1")
    return True
