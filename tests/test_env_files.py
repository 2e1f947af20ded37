"""pyproject.toml and environment.yml pin the same versions; .ci/run calls the README's test command."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import ROOT


def _requirements(lines) -> dict[str, tuple[str, str]]:
    """name -> (extras, version) of every ``name[extras]==version`` line."""
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = (m.group(2) or "", m.group(3))
    return out


def _pins(lines) -> dict[str, str]:
    return {name: version for name, (_, version) in _requirements(lines).items()}


def _project_and_pip_section():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return project, env, next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_matches_pyproject():
    project, env, pip_section = _project_and_pip_section()
    py_pins = _pins(project["dependencies"])
    env_pins = _pins(pip_section)
    for dep in env["dependencies"]:
        if isinstance(dep, str) and "=" in dep:
            name, _, ver = dep.partition("=")
            env_pins.setdefault(name.strip().lower(), ver.lstrip("="))
    assert "python" in env_pins and env_pins["python"].startswith("3.11")
    missing = {k: v for k, v in py_pins.items() if k not in env_pins}
    differ = {k: (v, env_pins[k]) for k, v in py_pins.items() if k in env_pins and env_pins[k] != v}
    assert not missing, f"in pyproject but not environment.yml: {missing}"
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"


def test_spark_extra_matches_environment_yml():
    """The ``spark`` extra (numba-cuda for the GB10) and environment.yml pin the same version with the same
    extras; it is never a base dependency (CI has no GPU)."""
    project, _, pip_section = _project_and_pip_section()
    spark = _requirements(project["optional-dependencies"]["spark"])
    env = _requirements(pip_section)
    assert spark.get("numba-cuda") == ("[cu13]", "0.30.4"), spark
    differ = {k: (v, env.get(k)) for k, v in spark.items() if env.get(k) != v}
    assert not differ, f"spark extra vs environment.yml (extras, version): {differ}"
    assert not set(spark) & set(_pins(project["dependencies"])), "the spark extra must stay out of the base deps"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert m, "README needs the test command in a code block after <!-- test-command -->"
    command = m.group(1).strip()
    assert command in ci, f".ci/run must call the README's test command: {command}"
