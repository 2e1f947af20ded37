"""Unit tests of the helper package: testing helpers, authoring format, profiles, device facts, redaction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparkcourse import gpu, profile, testing
from sparkcourse.grader import authoring, feedback


def test_check_close_messages():
    testing.check_close(np.ones(3), np.ones(3))
    with pytest.raises(testing.CheckFailed, match="shape"):
        testing.check_close(np.ones(3), np.ones(4))
    with pytest.raises(testing.CheckFailed, match="first at index 2"):
        testing.check_close(np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(testing.CheckFailed, match="None"):
        testing.check_close(None, np.ones(2))
    with pytest.raises(testing.CheckFailed, match="ratio to expected: 8"):
        testing.check_number(16.0, 2.0)


def test_calls_into_detects_the_planner():
    from sparkcourse import capacity
    from sparkcourse.capacity import bits_per_param as imported

    def direct(fmt):
        return imported(fmt)

    def via_module(fmt):
        return capacity.bits_per_param(fmt)

    def own(fmt):
        return {"bf16": 16.0}[fmt]

    def local_from(fmt):
        from sparkcourse.capacity import bits_per_param as b

        return b(fmt)

    def local_import(fmt):
        import sparkcourse.capacity as c

        return c.bits_per_param(fmt)

    def local_parent(fmt):
        from sparkcourse import capacity as cap

        return cap.bits_per_param(fmt)

    assert testing.calls_into(local_from, "sparkcourse.capacity")
    assert testing.calls_into(local_import, "sparkcourse.capacity")
    assert testing.calls_into(local_parent, "sparkcourse.capacity")
    assert testing.calls_into(direct, "sparkcourse.capacity")
    assert testing.calls_into(via_module, "sparkcourse.capacity")
    assert not testing.calls_into(own, "sparkcourse.capacity")


def test_authoring_parse_and_errors():
    nb = authoring.parse("# %% markdown\n# # Title\n#\n# text\n\n# %% solution id=a\nx = 1  ### BEGIN SOLUTION\n"
                         "# %% tests id=t points=2\nassert x == 1\n")
    assert nb.cells[0].source == "# Title\n\ntext"
    assert nb.cells[2].metadata["nbgrader"] == {"grade_id": "t", "schema_version": 3, "locked": True,
                                                "solution": False, "grade": True, "points": 2}
    with pytest.raises(authoring.AuthoringError, match="points"):
        authoring.parse("# %% tests id=t\nassert 1\n")
    with pytest.raises(authoring.AuthoringError, match="duplicate"):
        authoring.parse("# %% setup id=a\n1\n# %% setup id=a\n2\n")
    with pytest.raises(authoring.AuthoringError, match="unknown kind 'slides'"):
        authoring.parse("# %% slides\n1\n")
    with pytest.raises(authoring.AuthoringError, match=r"^<authoring>:2: .*no option 'point'"):
        authoring.parse("\n# %% tests id=t point=2\nassert 1\n")


def test_block_format_errors_name_file_and_line():
    kinds = {"answer": authoring.Kind(("id",)), "note": authoring.Kind((), ("by",))}
    blocks = authoring.split_blocks("# about\n\n# %% answer id=a\nx = 1\n\n# %% note by='a b'\ntext\n", kinds, "f.py",
                                    preamble=True)
    assert [(b.kind, b.opts, b.text, b.where) for b in blocks] == [
        ("answer", {"id": "a"}, "x = 1", "f.py:3"), ("note", {"by": "a b"}, "text", "f.py:6")]
    bad = {"# %% answer\n": "f.py:1: '# %% answer' needs id=", "# %% answer id=a id=b\n": "given twice",
           "# %% answer id=a extra\n": "'extra' is not key=value", "# %% cell id=a\n": "unknown kind 'cell'",
           "# %%\n": "needs a kind", "x = 1\n# %% answer id=a\n": "f.py:1: text before",
           "# %% answer id='a\n": "cannot read the marker"}
    for text, message in bad.items():
        with pytest.raises(authoring.AuthoringError, match=message):
            authoring.split_blocks(text, kinds, "f.py")
    assert authoring.answers("# zero: t\n# %% answer id=a\n\nx = 1\n\n# %% answer id=b\n") == {"a": "x = 1", "b": ""}
    with pytest.raises(authoring.AuthoringError, match="s.py:3: duplicate id 'a'"):
        authoring.answers("# %% answer id=a\n1\n# %% answer id=a\n2\n", "s.py")


def test_profile_selection(monkeypatch):
    monkeypatch.setenv("SPARKCOURSE_PROFILE", "spark")
    assert profile.current().is_spark
    monkeypatch.setenv("SPARKCOURSE_PROFILE", "tiny")
    assert profile.current().pick(1, 2) == 1
    monkeypatch.setenv("SPARKCOURSE_PROFILE", "huge")
    with pytest.raises(ValueError):
        profile.current()
    monkeypatch.delenv("SPARKCOURSE_PROFILE")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert profile.current().name == "tiny"


def test_meminfo_and_spark_detection(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       127535144 kB\nMemAvailable:   120000000 kB\n")
    assert gpu.meminfo_bytes("MemTotal", str(f)) == 127535144 * 1024
    assert gpu.meminfo_bytes("Nope", str(f)) is None
    assert gpu.is_spark_name("NVIDIA GB10") and not gpu.is_spark_name("NVIDIA H100 80GB HBM3")
    info = gpu.detect()
    assert info.kind in ("cpu", "cuda", "spark") and info.describe()
    assert gpu.cpu_model() and len(gpu.load_average()) == 3


def test_strip_hidden_and_short_error():
    src = "check(1)\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\nafter()"
    out = feedback.strip_hidden(src)
    assert "secret" not in out and "after()" in out and "check(1)" in out
    assert feedback.short_error({"ename": "CheckFailed", "evalue": "\x1b[31mbad\x1b[0m"}) == ["CheckFailed: bad"]


def test_setup_numba_selects_the_simulator_without_a_gpu():
    import os
    import subprocess
    import sys

    code = ("from sparkcourse.gpu import setup_numba; sim = setup_numba(force_simulator=True); "
            "import numpy as np; from numba import cuda; "
            "print(sim, cuda.is_available(), type(cuda).__name__, hasattr(np, 'row_stack'))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # other tests set it in this process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True" and out.stdout.split()[-1] == "True"
    late = subprocess.run([sys.executable, "-c", "import numba; from sparkcourse.gpu import setup_numba; "
                           "setup_numba(force_simulator=True)"], capture_output=True, text=True, timeout=120, env=env)
    assert late.returncode != 0 and "before sparkcourse.gpu.setup_numba" in late.stderr


def test_doctor_reports_offline_models(capsys):
    from sparkcourse.cli import main

    code = main(["doctor"])
    out = capsys.readouterr().out
    assert "offline embeddings: all-MiniLM-L6-v2 loads, 384-d" in out
    assert code == 0, out


def test_warnings_go_to_stdout_while_grading():
    import subprocess
    import sys

    code = ("import warnings, sparkcourse; sparkcourse.setup(quiet=True); "
            "warnings.warn('a library deprecation', DeprecationWarning); print('done')")
    env = {"NBGRADER_EXECUTION": "autograde", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "always"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "a library deprecation" in out.stdout and "a library deprecation" not in out.stderr


def test_mean_sd_and_its_nan_rule():
    from sparkcourse.stats import mean_sd

    mean, sd = mean_sd([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and sd == pytest.approx(0.2)
    assert mean_sd([0.4]) == (0.4, 0.0)
    assert all(math.isnan(x) for x in mean_sd([]) + mean_sd([0.5, float("nan")]))
