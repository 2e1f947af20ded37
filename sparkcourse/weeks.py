"""The week registry (``weeks.toml``): every week's id, title, status, modules, data and extra dependencies.

Paths and module names follow from the id, so a week is named the same everywhere::

    03-peft -> authoring/03-peft.py, source/03-peft/, release/03-peft/, sample_class/03-peft/,
               tests/mutants/03-peft.py, sparkcourse.reference.w03_peft, sparkcourse.labs.w03_peft,
               tests/weeks/test_w03_peft.py
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY = Path(__file__).with_name("weeks.toml")
ID_PATTERN = re.compile(r"^(\d\d)-([a-z][a-z0-9]*(?:-[a-z0-9]+)*)$")
BASE_DEPS = ("torch", "numpy", "nbgrader", "jupyterlab", "ipywidgets", "matplotlib")


@dataclass(frozen=True)
class Week:
    """One registry entry and the names derived from its id."""

    id: str
    title: str
    topic: str
    status: str = "ready"
    labs: bool = False
    data: tuple[str, ...] = ()
    deps: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def number(self) -> str:
        """The two digits, ``03``."""
        return self.id[:2]

    @property
    def module(self) -> str:
        """The Python name of the week, ``w03_peft``."""
        return "w" + self.id.replace("-", "_")

    @property
    def reference(self) -> str:
        """The week's reference module (instructor-only)."""
        return f"sparkcourse.reference.{self.module}"

    @property
    def lab(self) -> str | None:
        """The week's lab module, if it has one."""
        return f"sparkcourse.labs.{self.module}" if self.labs else None

    @property
    def ready(self) -> bool:
        """True for a week that ships (``status = "ready"``)."""
        return self.status == "ready"

    def paths(self, root: Path) -> dict[str, Path]:
        """Every file or folder a ready week owns, by role."""
        pkg = root / "sparkcourse"
        out = {
            "authoring": root / "authoring" / f"{self.id}.py",
            "source": root / "source" / self.id / f"{self.id}.ipynb",
            "release": root / "release" / self.id / f"{self.id}.ipynb",
            "reference": pkg / "reference" / f"{self.module}.py",
            "tests": root / "tests" / "weeks" / f"test_{self.module}.py",
            "mutants": root / "tests" / "mutants" / f"{self.id}.py",
            "sample_class": root / "sample_class" / self.id / "expected.toml",
        }
        if self.labs:
            out["lab"] = pkg / "labs" / f"{self.module}.py"
        for name in self.data:
            out[f"data:{name}"] = pkg / "data" / name
        return out


def _week(entry: dict) -> Week:
    """A validated Week from one ``[[week]]`` table."""
    wid = entry.get("id", "")
    if not ID_PATTERN.match(wid):
        raise ValueError(f"weeks.toml: bad week id {wid!r} (expected NN-topic, lower case)")
    unknown = set(entry) - {"id", "title", "topic", "status", "labs", "data", "deps", "note"}
    if unknown:
        raise ValueError(f"weeks.toml: week {wid} has unknown keys {sorted(unknown)}")
    if entry.get("status", "ready") not in ("ready", "planned"):
        raise ValueError(f"weeks.toml: week {wid} has status {entry['status']!r} (ready or planned)")
    return Week(wid, entry["title"], entry["topic"], entry.get("status", "ready"), bool(entry.get("labs", False)),
                tuple(entry.get("data", ())), tuple(entry.get("deps", ())), entry.get("note", ""))


@functools.cache
def _load(path: Path, mtime: float) -> tuple[Week, ...]:
    weeks = tuple(_week(e) for e in tomllib.loads(path.read_text()).get("week", []))
    ids = [w.id for w in weeks]
    if len(set(ids)) != len(ids) or len({w.number for w in weeks}) != len(ids):
        raise ValueError("weeks.toml: a week id or number appears twice")
    return weeks


def registry_for(root: Path) -> Path:
    """The registry of the course at ``root``: its own ``sparkcourse/weeks.toml``, else the installed one."""
    own = root / "sparkcourse" / "weeks.toml"
    return own if own.exists() else REGISTRY


def all_weeks(path: Path = REGISTRY) -> tuple[Week, ...]:
    """Every week in the registry, in course order (planned ones included)."""
    return _load(path, path.stat().st_mtime)


def ready(path: Path = REGISTRY) -> list[Week]:
    """The weeks that ship."""
    return [w for w in all_weeks(path) if w.ready]


def get(week_id: str, path: Path = REGISTRY) -> Week:
    """One week by id (``03-peft``) or number (``03``)."""
    for w in all_weeks(path):
        if week_id in (w.id, w.number):
            return w
    raise KeyError(f"no week {week_id!r} in {path.name}")


def deps(path: Path = REGISTRY) -> list[str]:
    """Distributions a ready course needs: the base set plus every ready week's extras, in first-seen order."""
    out = dict.fromkeys(BASE_DEPS)
    for w in ready(path):
        out.update(dict.fromkeys(w.deps))
    return list(out)


def course_map(path: Path = REGISTRY) -> str:
    """The README's course-map table (markdown)."""
    rows = ["| week | assignment | topic | status |", "|---|---|---|---|"]
    for w in all_weeks(path):
        status = "**ready**" if w.ready else "planned"
        if w.note:
            status += f" ({w.note})"
        ident = f"`{w.id}`" if w.ready else ""
        rows.append(f"| {w.number} | {ident} | **{w.title}.** {w.topic} | {status} |")
    return "\n".join(rows)


MAP_BEGIN = "<!-- course-map: generated from sparkcourse/weeks.toml by `sparkcourse map`; a test checks it -->"
MAP_END = "<!-- /course-map -->"


def with_course_map(readme: str, path: Path = REGISTRY) -> str:
    """``readme`` with the text between the course-map markers replaced by :func:`course_map`."""
    try:
        head, rest = readme.split(MAP_BEGIN, 1)
        _, tail = rest.split(MAP_END, 1)
    except ValueError:
        raise ValueError("README.md has no course-map markers") from None
    return f"{head}{MAP_BEGIN}\n{course_map(path)}\n{MAP_END}{tail}"
