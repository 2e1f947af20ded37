"""The week registry (sparkcourse/weeks.toml) and the repository agree; the package keeps its three audiences
apart; `sparkcourse new` scaffolds a week that `sparkcourse check` passes."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from conftest import ASSIGNMENTS, ROOT, WEEKS

from sparkcourse import weeks
from sparkcourse.grader import course

REGISTRY = weeks.registry_for(ROOT)
PKG = ROOT / "sparkcourse"


def test_registry_is_what_the_repository_holds():
    assert ASSIGNMENTS == course.assignments(ROOT), "ready weeks in weeks.toml != assignments in source/"
    assert sorted(p.stem for p in (ROOT / "authoring").glob("*.py")) == ASSIGNMENTS
    assert sorted(p.name for p in (ROOT / "sample_class").iterdir() if p.is_dir()) == ASSIGNMENTS
    assert sorted(p.stem for p in (ROOT / "tests" / "mutants").glob("*.py")) == ASSIGNMENTS
    modules = {w.module for w in WEEKS}
    assert {p.stem for p in (PKG / "reference").glob("w*.py")} == modules, "reference/ and the registry differ"
    assert {p.stem for p in (PKG / "labs").glob("w*.py")} == {w.module for w in WEEKS if w.labs}
    stems = [p.stem for p in (ROOT / "tests" / "weeks").glob("test_*.py")]
    owner = {s: [m for m in modules if s == f"test_{m}" or s.startswith(f"test_{m}_")] for s in stems}
    assert all(owner.values()), f"tests/weeks files of no registered week: {[s for s, m in owner.items() if not m]}"
    assert {s[len("test_"):] for s in stems} >= modules, "tests/weeks/test_wNN_topic*.py and the registry differ"


@pytest.mark.parametrize("w", WEEKS, ids=[w.id for w in WEEKS])
def test_every_ready_week_has_its_files_and_title(w):
    missing = [role for role, path in w.paths(ROOT).items() if not path.exists()]
    assert not missing, f"{w.id} lacks {missing}"
    first = w.paths(ROOT)["authoring"].read_text().splitlines()[1]
    assert first == f"# # Week {w.number} — {w.title}", f"{w.id}: the notebook's title is not the registry's"


def test_planned_weeks_have_no_files_yet():
    for w in weeks.all_weeks(REGISTRY):
        if not w.ready:
            present = [role for role, path in w.paths(ROOT).items() if path.exists()]
            assert not present, f"{w.id} is planned but has {present}: mark it ready"


def test_readme_course_map_is_generated_from_the_registry():
    text = (ROOT / "README.md").read_text()
    assert weeks.with_course_map(text, REGISTRY) == text, "README's course map is stale: run `sparkcourse map`"


def test_week_dependencies_are_pinned():
    pins = {re.split(r"[=<>\[]", d)[0].lower() for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert set(weeks.deps(REGISTRY)) <= pins, f"unpinned: {set(weeks.deps(REGISTRY)) - pins}"


def test_registry_rejects_bad_entries(tmp_path):
    bad = tmp_path / "weeks.toml"
    bad.write_text('[[week]]\nid = "3-peft"\ntitle = "x"\ntopic = "y"\n')
    with pytest.raises(ValueError, match="bad week id"):
        weeks.all_weeks(bad)
    bad.write_text('[[week]]\nid = "03-a"\ntitle = "x"\ntopic = "y"\n[[week]]\nid = "03-b"\ntitle = "x"\ntopic = "y"\n')
    with pytest.raises(ValueError, match="twice"):
        weeks.all_weeks(bad)
    with pytest.raises(KeyError):
        weeks.get("42-nothing", REGISTRY)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names]
    return out


def test_what_students_receive_imports_neither_grader_nor_reference():
    """The bundle holds sparkcourse/ without reference/ and grader/: nothing in it may import them. The CLI
    imports the grader only inside the instructor's commands (students use `sparkcourse doctor`)."""
    shipped = [p for p in PKG.rglob("*.py") if not {"reference", "grader"} & set(p.relative_to(PKG).parts)]
    assert len(shipped) > 10
    for path in shipped:
        for name, top in _imports(path):
            private = name.startswith(("sparkcourse.grader", "sparkcourse.reference"))
            if path.name == "cli.py" and not top:
                continue
            assert not private, f"{path.relative_to(ROOT)} imports {name}"


class _Canon(ast.NodeTransformer):
    """Rename every local name in order of appearance: two functions that differ only in names compare equal."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def _n(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id=self._n(node.id), ctx=node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg=self._n(node.arg)), node)


def _bodies(source: str) -> dict[str, str]:
    """Normalised body (names renamed in order, docstrings dropped, unparsed) -> function name, for every function
    of at least three statements in ``source``."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            if len(body) >= 3:
                fn = ast.FunctionDef(name="f", args=node.args, body=body, decorator_list=[], returns=None,
                                     type_params=[])
                out[ast.unparse(ast.fix_missing_locations(_Canon().visit(fn)))] = node.name
    return out


# Week 00's planner is public on purpose (later weeks use it); week 00's hidden tests check that the graded
# functions do not call it (sparkcourse.testing.calls_into).
ALLOWED = {"sparkcourse/capacity.py": "00-spark-capacity"}


def test_no_solution_ships_outside_the_reference():
    """No solution function's body (names and formatting normalised; 80% similar counts) appears in anything
    students receive."""
    import difflib
    import zipfile

    from sparkcourse.grader.authoring import parse

    solutions = {}
    for w in WEEKS:
        for c in parse(w.paths(ROOT)["authoring"].read_text()).cells:
            if c.metadata.get("nbgrader", {}).get("solution"):
                src = "\n".join(ln for ln in c.source.splitlines() if "### BEGIN SOLUTION" not in ln
                                and "### END SOLUTION" not in ln)
                solutions |= {k: (w.id, v) for k, v in _bodies(src).items()}
    assert len(solutions) > 20
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(course.bundle(ROOT, Path(tmp) / "b.zip")) as zf:
            shipped = {n: zf.read(n).decode() for n in zf.namelist() if n.endswith(".py")}
    leaks = []
    for name, text in shipped.items():
        for body, fn in _bodies(text).items():
            for sol, (week, sol_fn) in solutions.items():
                if ALLOWED.get(name) == week or abs(len(body) - len(sol)) > 0.4 * len(sol):
                    continue
                sm = difflib.SequenceMatcher(None, body, sol, autojunk=False)
                if sm.real_quick_ratio() >= 0.8 and sm.quick_ratio() >= 0.8 and sm.ratio() >= 0.8:
                    leaks.append(f"{name}:{fn} is {week}'s {sol_fn}")
    assert not leaks, f"solutions shipped outside the reference: {leaks}"


@pytest.mark.grading
@pytest.mark.slow
def test_new_week_scaffold_passes_check():
    """`sparkcourse new 99-example && sparkcourse check 99-example` in a throw-away copy of the repository."""
    base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else Path(tempfile.gettempdir())
    copy = Path(tempfile.mkdtemp(prefix="sparkcourse-new-", dir=base))
    try:
        for name in ("nbgrader_config.py", "README.md", "pyproject.toml", "authoring", "source", "release",
                     "sample_class", "sparkcourse", "tests"):
            src = ROOT / name
            (shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
             if src.is_dir() else shutil.copy2(src, copy / name))
        env = dict(os.environ, PYTHONPATH=str(copy))
        cmd = [sys.executable, "-m", "sparkcourse.cli", "--root", str(copy)]
        made = subprocess.run([*cmd, "new", "99-example"], capture_output=True, text=True, env=env, timeout=300)
        assert made.returncode == 0, made.stdout + made.stderr
        for path in ("authoring/99-example.py", "sparkcourse/reference/w99_example.py", "sparkcourse/labs/w99_example.py",
                     "tests/weeks/test_w99_example.py", "tests/mutants/99-example.py",
                     "sample_class/99-example/expected.toml", "release/99-example/99-example.ipynb"):
            assert (copy / path).exists(), path
        assert "`99-example`" in (copy / "README.md").read_text()
        again = subprocess.run([*cmd, "new", "99-example"], capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode != 0 and "already" in (again.stdout + again.stderr)
        checked = subprocess.run([*cmd, "check", "99-example", "-j", "2"], capture_output=True, text=True, env=env,
                                 timeout=900, cwd=copy)
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
        assert "mutants caught" in checked.stdout and "students as expected" in checked.stdout
        unit = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/weeks/test_w99_example.py"], capture_output=True, text=True, env=env,
                              cwd=copy, timeout=300)
        assert unit.returncode == 0, unit.stdout[-2000:]
    finally:
        shutil.rmtree(copy, ignore_errors=True)
