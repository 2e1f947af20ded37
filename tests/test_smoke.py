"""``sparkcourse smoke`` on a CPU (tiny profile) and the doctor's GPU checks without a GPU."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from sparkcourse import cli, gpu
from sparkcourse.grader import smoke

FAKE_WEEKS = {
    "97-slow": "import time\nprint('started', flush=True)\ntime.sleep(120)\n",
    "98-broken": ("import os\nprint('SKIPPED: some/model could not be loaded — log in with `hf auth login`')\n"
                  "assert os.environ['SPARKCOURSE_STANDIN'] == '1' and os.environ['MPLBACKEND'] == 'Agg'\n"
                  "assert 'NBGRADER_EXECUTION' not in os.environ\n"
                  "raise RuntimeError('the model is not there')\n"),
    "99-fine": ("import os, pathlib\nprint('SKIPPED: a — b')\nprint('SKIPPED: c — d')\n"
                "assert os.environ['SPARKCOURSE_PROFILE'] == 'tiny'\n"
                "assert 'SPARKCOURSE_STANDIN' not in os.environ, 'standin off'\n"
                "pathlib.Path('scratch.txt').write_text('cwd is a temp dir')\n"),
}


def test_smoke_one_real_week_through_the_cli(tmp_path, capsys):
    out = tmp_path / "report.md"
    rc = cli.main(["--root", str(ROOT), "smoke", "00-spark-capacity", "--profile", "tiny", "--out", str(out),
                   "--logs", str(tmp_path / "logs"), "--timeout", "300"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "ok   00-spark-capacity" in printed and "1 of 1 weeks passed" in printed
    report = out.read_text()
    for fact in ("- card: ", "- driver: ", "- torch: ", "- CUDA: ", "- numba-cuda: ", "- date: ",
                 "- command: `sparkcourse --root", "profile: tiny; stand-in mode: on"):
        assert fact in report, fact
    row = next(line for line in report.splitlines() if line.startswith("| `00-spark-capacity`"))
    assert row.split("|")[2].strip() == "pass" and row.split("|")[5].strip() == "0"
    assert (tmp_path / "logs" / "00-spark-capacity.log").read_text().strip()


def test_smoke_reports_failures_skips_and_timeouts(tmp_path, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # the smoke run must not look like grading
    (tmp_path / "authoring").mkdir()
    for week, text in FAKE_WEEKS.items():
        (tmp_path / "authoring" / f"{week}.py").write_text(text)
    broken, = smoke.smoke(tmp_path, ["98-broken"], "tiny", True, 120, tmp_path / "logs", echo=False)
    assert not broken.ok and broken.returncode == 1 and broken.skipped == 1
    assert broken.last_error == "RuntimeError: the model is not there" and broken.peak_gpu_bytes is None
    fine, = smoke.smoke(tmp_path, ["99-fine"], "tiny", False, 120, tmp_path / "logs", echo=False)
    slow, = smoke.smoke(tmp_path, ["97-slow"], "tiny", False, 5, tmp_path / "logs", echo=False)
    assert fine.ok and fine.skipped == 2 and fine.last_error == ""
    assert not (tmp_path / "scratch.txt").exists(), "each week runs in a temporary directory"
    assert not slow.ok and slow.returncode is None and slow.last_error.startswith("timed out after 5 s")
    assert "KeyboardInterrupt" in slow.last_error, "interrupted first: the runner still reports"
    assert slow.seconds < 60
    table = smoke.markdown([broken, fine, slow], {"card": "x", "command": "sparkcourse smoke"}, "tiny", True)
    assert "| `98-broken` | **fail** |" in table and "| 2 |" in table and "RuntimeError: the model" in table
    assert "1 of 3 weeks passed" in table


def test_parse_log():
    text = ("step 1\nSKIPPED: m — f\nTraceback (most recent call last):\n  File \"x\", line 1\n"
            "torch.OutOfMemoryError: CUDA out of memory\nSPARKCOURSE_SMOKE {\"cuda\": true, \"peak_bytes\": 5}\n")
    assert smoke.parse_log(text) == (1, "torch.OutOfMemoryError: CUDA out of memory", 5)
    assert smoke.parse_log("fine\n") == (0, "", None)


def test_child_env_puts_the_course_first(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKCOURSE_STANDIN", "1")
    env = smoke.child_env("spark", False, ROOT)
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT) and "SPARKCOURSE_STANDIN" not in env
    assert env["SPARKCOURSE_PROFILE"] == "spark" and env["PYTHONUNBUFFERED"] == "1"
    assert smoke.child_env("tiny", True, tmp_path)["SPARKCOURSE_STANDIN"] == "1"


def test_runner_reports_no_gpu_use(tmp_path, capfd):
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint(sys.argv[1:], __name__)\n")
    out = subprocess.run([sys.executable, "-m", "sparkcourse.grader.smoke_run", str(script), "a"],
                         capture_output=True, text=True, cwd=tmp_path, env=smoke.child_env("tiny", True, ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["['a'] __main__", 'SPARKCOURSE_SMOKE {"cuda": false, "peak_bytes": null}']


def test_doctor_gpu_checks_skip_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.smoke_checks() == [("GPU smoke tests", True, "skipped: no CUDA GPU")]


def test_doctor_gpu_check_failure_carries_its_fix(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(8e9), int(16e9)))
    monkeypatch.setattr(gpu, "detect", lambda: gpu.DeviceInfo("cuda", "Fake GPU", int(16e9), False, (8, 0)))

    def broken(info):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(gpu, "_smoke_numba", broken)
    monkeypatch.setattr(gpu, "_smoke_bnb4", lambda info: (True, "fine"))
    checks = {name: (ok, detail) for name, ok, detail in gpu.smoke_checks()}
    assert checks["memory"] == (True, "dedicated: 16.0 GB of GPU memory, 8.0 GB free")
    ok, detail = checks["numba-cuda kernel"]
    assert not ok and "no kernel image" in detail and "numba-cuda[cu13]==0.30.4" in detail
    assert checks["FP8 _scaled_mm"][0] and checks["FP8 _scaled_mm"][1].startswith("skipped: sm_80")
