"""pyproject.toml and environment.yml pin the same versions; .ci/run calls the README's test command."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import ROOT


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^;\s]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py_pins = _pins(project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
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


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert m, "README needs the test command in a code block after <!-- test-command -->"
    command = m.group(1).strip()
    assert command in ci, f".ci/run must call the README's test command: {command}"
