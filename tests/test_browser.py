"""The student's and the TA's day in a real browser: JupyterLab and formgrader, driven by Playwright in Debian's
Chromium (``scripts/setup_browser.sh`` installs it; no browser is downloaded).

One JupyterLab server runs on the graded course of the class run (``graded_course``), offline, with a local
exchange directory. Outside CI a missing Chromium skips these tests with the fix; with ``CI=true`` it fails.
``SPARKCOURSE_SCREENSHOTS=DIR`` saves a PNG of each step (the README's are in docs/screenshots/).
``SPARKCOURSE_BROWSER_COURSE=DIR`` uses a course that is already built, graded and given feedback instead of the
class run (for working on these tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, secret_lines

from sparkcourse.grader import course
from sparkcourse.grader.authoring import read_answers

pytestmark = [pytest.mark.browser, pytest.mark.grading]

WEEK = "00-spark-capacity"  # the week the student works through: its notebook runs in seconds
CHROMIUM = next((p for p in (os.environ.get("SPARKCOURSE_CHROMIUM"), shutil.which("chromium"),
                             "/usr/bin/chromium") if p and Path(p).exists()), None)
TOKEN = "sparkcourse-browser-test"
SERVED = "browser-test"  # the folder of the course root holding the copies the browser opens


def _need_browser():
    missing = []
    if CHROMIUM is None:
        missing.append("Chromium (`bash scripts/setup_browser.sh` installs Debian's chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (`bash scripts/setup.sh` installs the dev extra)")
    if missing:
        msg = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)


def shot(page, name: str) -> None:
    """Save a screenshot of this step when SPARKCOURSE_SCREENSHOTS names a folder."""
    out = os.environ.get("SPARKCOURSE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / f"{name}.png"
        page.screenshot(path=str(path))
        from PIL import Image  # a 256-colour palette keeps the committed PNGs small

        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def course_root(request) -> Path:
    """A built, graded course with feedback: the class run's, or SPARKCOURSE_BROWSER_COURSE."""
    _need_browser()
    given = os.environ.get("SPARKCOURSE_BROWSER_COURSE")
    if given:
        return Path(given)
    return request.getfixturevalue("graded_course").root


@pytest.fixture(scope="module")
def lab(course_root, tmp_path_factory):
    """JupyterLab on the course root (formgrader reads its gradebook), the notebooks it opens copied into
    SERVED: (base URL, course root, the SERVED folder). News and update checks off, every notebook cell
    rendered (no windowing), a local exchange."""
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    exchange = tmp / "exchange"
    exchange.mkdir()
    config = tmp / "config"
    config.mkdir()
    (config / "nbgrader_config.py").write_text(f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n")
    # the notebooks opened are copies inside the course root (formgrader and Validate read the course's own
    # config there), and checkpoints go elsewhere: the class run's release/ and source/ stay as built, since
    # other tests compare them with the repository
    labroot = course_root / SERVED
    shutil.rmtree(labroot, ignore_errors=True)
    shutil.copytree(course_root / "release", labroot / "release")
    shutil.copytree(course_root / "source" / WEEK, labroot / "source" / WEEK)
    port = _free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTER_CONFIG_DIR=str(config),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), SPARKCOURSE_PROFILE="tiny")
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={course_root}",
         f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}", "--LabApp.expose_app_in_browser=True"],
        cwd=course_root, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield base, course_root, labroot
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package, driven by Playwright."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, lab):
    """A fresh page that may reach only the local server and files: anything else (MathJax's CDN, fonts) is
    refused, as on a machine with no network."""
    base = lab[0]
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.route(re.compile(r"^(?!" + re.escape(base) + r"|data:|blob:|about:|file:).*"), lambda route: route.abort())
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(f"{base}/formgrader?token={TOKEN}")  # logs in: the token becomes a cookie (formgrader's API calls
    yield pg                                      # fail when the page's own address carries the token)
    ctx.close()


def open_notebook(page, base: str, rel: str, kernel: bool = True) -> None:
    """Open a notebook in JupyterLab as the only document and wait for its cells (and, with ``kernel``, for the
    kernel to idle)."""
    if "/lab" not in page.url:
        page.goto(f"{base}/lab?reset")
        page.wait_for_function("() => window.jupyterapp !== undefined")
        page.evaluate("() => window.jupyterapp.started")
    page.evaluate("""async (path) => {
        for (const w of [...jupyterapp.shell.widgets('main')]) w.dispose();
        await jupyterapp.commands.execute('docmanager:open', {path});
    }""", rel)
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    if kernel:
        wait_idle(page)


def cells(page):
    """The notebook's cells, in order."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")


def wait_idle(page, timeout: float = 120_000) -> None:
    """Until the kernel has nothing left to run."""
    page.wait_for_timeout(500)
    page.wait_for_function(IDLE, timeout=timeout)


IDLE = r"""() => {
  const bar = document.querySelector('#jp-main-statusbar')?.innerText || '';
  const busy = [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.innerText.includes('[*]'));
  return /\|\s*Idle/.test(bar) && !busy;
}"""


def run_menu(page, label: str) -> None:
    """Run ▸ <label>."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^" + re.escape(label) + "$")).click()


def cell_index(nb, grade_id: str) -> int:
    """Index of the cell with this nbgrader grade id."""
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def type_into_cell(page, index: int, text: str) -> None:
    """Replace a code cell's text as a student would by pasting it (no auto-indent, no auto-closed brackets)."""
    editor = cells(page).nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)
    page.keyboard.press("Escape")


def run_cell(page, index: int) -> None:
    """Select a cell and run it (Shift+Enter), then wait for the kernel."""
    cell = cells(page).nth(index)
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    wait_idle(page)


def cell_error(page, index: int) -> str:
    """The error output of a cell ('' when it ran clean)."""
    err = cells(page).nth(index).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return "\n".join(err.all_inner_texts())


def test_student_runs_fills_and_validates(page, lab):
    """Run All on the release; one exercise answered right and one wrong; the visible tests pass and fail with
    the test's message; Validate gives its verdict."""
    base, root, served = lab
    rel = f"release/{WEEK}/{WEEK}.ipynb"
    work = f"student/{WEEK}/{WEEK}.ipynb"  # the student's copy, so the release stays as built
    (served / work).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(served / rel, served / work)
    nb = nbformat.read(served / rel, as_version=4)
    right = read_answers(ROOT / "sample_class" / WEEK / "ada.py")  # complete and correct
    wrong = read_answers(ROOT / "sample_class" / WEEK / "bob.py")  # partial: see expected.toml
    open_notebook(page, base, f"{SERVED}/{work}")
    shot(page, "01-student-opens-release")

    run_menu(page, "Run All Cells")
    wait_idle(page)
    first_answer = min(cell_index(nb, g) for g in right)
    first_error = next(i for i in range(len(nb.cells)) if cell_error(page, i))
    assert first_error >= first_answer and "NotImplementedError" in cell_error(page, first_error), \
        "Run All should run clean up to the first exercise and stop at a test of its stub"
    shot(page, "02-student-run-all-stops-at-a-stub")

    # exercise 1 right: its answer cell and every test cell after it up to the next answer pass
    good, bad = "bits_per_param", "param_counts"
    for gid, answers in ((good, right), (bad, wrong)):
        i = cell_index(nb, gid)
        type_into_cell(page, i, answers[gid])
        run_cell(page, i)
        assert cell_error(page, i) == "", f"{gid}: the answer cell itself should run"
    tests_after = {}
    for gid in (good, bad):
        i = cell_index(nb, gid)
        j = i + 1
        while j < len(nb.cells) and not nb.cells[j].metadata.get("nbgrader", {}).get("solution"):
            if nb.cells[j].metadata.get("nbgrader", {}).get("grade"):
                run_cell(page, j)
                tests_after.setdefault(gid, []).append((nb.cells[j].metadata["nbgrader"]["grade_id"],
                                                        cell_error(page, j)))
            j += 1
    shot(page, "03-student-visible-tests")
    assert tests_after[good] and all(err == "" for _, err in tests_after[good]), tests_after[good]
    failing = [(tid, err) for tid, err in tests_after[bad] if err]
    assert failing, f"{bad}: the wrong answer should fail a visible test"
    # the visible test's message is the one the grader recorded for the same student and test cell
    graded = nbformat.read(root / "autograded" / "bob" / WEEK / f"{WEEK}.ipynb", as_version=4)
    for tid, err in failing:
        recorded = [o for o in graded.cells[cell_index(graded, tid)].get("outputs", [])
                    if o.get("output_type") == "error"]
        assert recorded and recorded[0]["evalue"] and recorded[0]["evalue"] in err, (tid, err)

    page.keyboard.press("ControlOrMeta+s")
    page.wait_for_timeout(1000)
    if page.locator(".jp-Dialog-content", has_text="File Changed").count():  # the copy's time stamp
        page.get_by_role("button", name="Overwrite").click()
    page.wait_for_function("() => !document.querySelector('.jp-Dialog')")
    page.get_by_role("button", name="Validate").first.click()
    dialog = page.locator(".jp-Dialog-content")
    dialog.wait_for(timeout=180_000)
    page.wait_for_function(
        "() => !/Validating/i.test(document.querySelector('.jp-Dialog-content')?.innerText || 'Validating')",
        timeout=180_000)
    verdict = dialog.inner_text()
    shot(page, "04-student-validate")
    # Validate runs every cell as the grader will and names the first failing test with its message
    assert "failed" in verdict.lower(), verdict
    assert any(err.strip().splitlines()[-1].split(": ", 1)[-1] in verdict for _, err in failing), verdict


def test_ta_reads_scores_submission_and_feedback(page, lab):
    """Formgrader lists the graded sample class with its expected scores; a submission opens; the feedback page
    shows no hidden-test source, no grader-internal output, and math rendered with no network."""
    base, root, _ = lab
    expected = course.sample_class_spec(ROOT, WEEK)["students"]
    page.goto(f"{base}/formgrader/gradebook/{WEEK}/{WEEK}")
    page.wait_for_function("() => /\\d+ \\/ \\d+/.test(document.querySelector('table tbody')?.innerText || '')")
    page.get_by_text("Show All Names").click()
    rows = page.locator("table tbody tr")
    shot(page, "05-ta-formgrader-scores")
    seen = {}
    for text in rows.all_inner_texts():
        for name in expected:
            if re.search(rf"\b{re.escape(name)}\b", text):
                m = re.search(r"(\d+(?:\.\d+)?) / (\d+(?:\.\d+)?)", text)
                seen[name] = float(m.group(1))
    for name, spec in expected.items():
        if spec.get("kind") == "malformed":
            assert name not in seen, f"{name} is malformed and was never graded"
        else:
            assert seen.get(name) == spec["score"], (name, seen.get(name), spec["score"])

    page.get_by_text(re.compile(r"^\s*bob\b")).first.click()
    page.wait_for_selector("text=Submission")
    shot(page, "06-ta-formgrader-submission")
    graded = nbformat.read(root / "autograded" / "bob" / WEEK / f"{WEEK}.ipynb", as_version=4)
    first_failure = next(o["evalue"] for c in graded.cells for o in c.get("outputs", [])
                         if o.get("output_type") == "error" and o.get("evalue"))
    assert first_failure in page.inner_text("body"), "the submission page should show bob's graded notebook"

    page.goto((root / "feedback" / "bob" / WEEK / f"{WEEK}.html").as_uri())  # as a TA opens it from disk
    page.wait_for_load_state("load")
    shot(page, "07-ta-feedback-page")
    text = page.inner_text("body")
    leaked = [ln for ln in secret_lines(WEEK) if ln in text]
    assert not leaked, f"hidden-test source on the feedback page: {leaked[:3]}"
    for internal in ("FutureWarning", "DeprecationWarning", "site-packages", "sparkcourse/grader",
                     str(ROOT), str(root)):
        assert internal not in text, f"grader-internal output on the feedback page: {internal!r}"
    assert page.locator("math").count() > 0, "the feedback page renders no math"
    assert "$$" not in text and not re.search(r"\\(frac|sum|text|mathrm)\b", text), "raw LaTeX on the page"


# ---------------------------------------------------------------------------------------------------------------
# Every release notebook renders: no raw LaTeX, no missing image, no markdown left unrendered.

RENDER_PROBLEMS = r"""
() => {
  const problems = [];
  const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')];
  cells.forEach((cell, i) => {
    if (!cell.classList.contains('jp-MarkdownCell')) return;
    const out = cell.querySelector('.jp-RenderedMarkdown');
    if (!out) { problems.push(`cell ${i}: markdown not rendered`); return; }
    out.querySelectorAll('img').forEach(img => {
      if (!img.complete || img.naturalWidth === 0) problems.push(`cell ${i}: missing image ${img.getAttribute('src')}`);
    });
    if (out.querySelector('mjx-merror, .MathJax_Error, merror'))
      problems.push(`cell ${i}: math that does not typeset`);
    const clone = out.cloneNode(true);
    clone.querySelectorAll('code, pre, mjx-container, .MathJax, math, script').forEach(e => e.remove());
    const text = clone.innerText;
    if (/\$\$|\\(frac|sum|mathrm|text|cdot|left|right|begin)\b/.test(text) || /(^|[^\\\w])\$[^$\s][^$\n]*\$/.test(text))
      problems.push(`cell ${i}: raw LaTeX: ${text.match(/.{0,30}(\$|\\[a-z]+).{0,30}/)?.[0]}`);
    if (/^\s*(#{1,6} |\|[-: |]+\||```)/m.test(text) || /\*\*\S[^*\n]*\S\*\*/.test(text))
      problems.push(`cell ${i}: markdown left unrendered: ${text.match(/.{0,40}(#|\||```|\*\*).{0,30}/)?.[0]}`);
  });
  return problems;
}
"""


def render_problems(page, base: str, rel: str) -> list[str]:
    """Open a notebook without running it; what does not render (each problem names its cell)."""
    open_notebook(page, base, rel, kernel=False)
    page.wait_for_function(
        "() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell:not(.jp-mod-rendered)')")
    page.wait_for_timeout(1500)  # MathJax typesets after the markdown is in place
    return page.evaluate(RENDER_PROBLEMS)


def test_every_release_notebook_renders(page, lab):
    base, _, served = lab
    bad = {}
    for a in sorted(p.name for p in (served / "release").iterdir() if p.is_dir()):
        problems = render_problems(page, base, f"{SERVED}/release/{a}/{a}.ipynb")
        if a == WEEK:
            shot(page, "08-release-rendered")
        if problems:
            bad[a] = problems
    assert not bad, bad


def test_render_check_catches_a_broken_notebook(page, lab):
    """The render check itself: raw LaTeX and a missing image in a notebook are reported with their cells."""
    base, _, served = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Fine\n\nSome $x^2$ math."),
                nbformat.v4.new_markdown_cell("Broken: \\frac{a}{b} with no dollars, and $$\\frac{1}{"),
                nbformat.v4.new_markdown_cell("![a plot](no-such-plot.png)")]
    (served / "broken").mkdir(exist_ok=True)
    nbformat.write(nb, served / "broken" / "broken.ipynb")
    problems = render_problems(page, base, f"{SERVED}/broken/broken.ipynb")
    assert any(p.startswith("cell 1: raw LaTeX") for p in problems), problems
    assert any(p.startswith("cell 2: missing image") for p in problems), problems
    assert not any(p.startswith("cell 0") for p in problems), problems


def test_solved_notebook_shows_widget_controls(page, lab):
    """Week 00's solved notebook, run in the browser, shows its ipywidgets explorer's controls."""
    base, _, served = lab
    src = f"source/{WEEK}/{WEEK}.ipynb"
    nb = nbformat.read(served / src, as_version=4)
    assert any("ipywidgets" in c.source or "interact" in c.source for c in nb.cells), "week 00 has no explorer"
    open_notebook(page, base, f"{SERVED}/{src}")
    run_menu(page, "Run All Cells")
    wait_idle(page, 180_000)
    widget = page.locator(".jupyter-widgets.widget-slider, .jupyter-widgets .widget-slider, .widget-dropdown").first
    widget.wait_for(timeout=60_000)
    widget.scroll_into_view_if_needed()
    shot(page, "09-widget-explorer")
    errors = [i for i in range(cells(page).count()) if "Error" in cell_error(page, i)]
    assert not errors, f"cells {errors} of the solved notebook raised"


def test_exchange_end_to_end(tmp_path):
    """The exchange on a local folder, as nbgrader documents it: the instructor releases, the student fetches and
    submits (late), the instructor collects, autogrades (the late penalty applies), writes and returns feedback,
    the student fetches it, and ``nbgrader export`` writes the grade CSV an LMS imports. The student's side runs
    the commands nbgrader's Assignment List runs for them; no browser is needed here."""
    import pwd

    student = pwd.getpwuid(os.getuid()).pw_name  # the exchange records the account that submits
    root = tmp_path / "course"
    assert all(r.ok for r in course.copy_course(ROOT, root, weeks=[WEEK]))
    exchange, home, config = tmp_path / "exchange", tmp_path / "home", tmp_path / "config"
    for d in (exchange, home, config):
        d.mkdir()
    (config / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
        "c.CourseDirectory.course_id = 'sparkcourse'\n"
        "c.LateSubmissionPlugin.penalty_method = 'zero'\n")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), SPARKCOURSE_PROFILE="tiny")

    def nbgrader(cwd: Path, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc.stdout + proc.stderr

    nbgrader(root, "db", "assignment", "add", WEEK, "--duedate=2020-01-01 00:00:00 UTC")
    nbgrader(root, "release_assignment", WEEK, "--force")
    nbgrader(home, "fetch_assignment", WEEK)
    fetched = home / "sparkcourse" / WEEK / f"{WEEK}.ipynb"
    if not fetched.exists():
        fetched = home / WEEK / f"{WEEK}.ipynb"
    nb = nbformat.read(fetched, as_version=4)
    answers = read_answers(ROOT / "sample_class" / WEEK / "ada.py")  # a complete, correct student
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            c.source = answers[gid]
    nbformat.write(nb, fetched)
    nbgrader(fetched.parent.parent, "submit", WEEK)
    nbgrader(root, "collect", WEEK)
    assert (root / "submitted" / student / WEEK / f"{WEEK}.ipynb").exists()
    nbgrader(root, "autograde", WEEK, f"--student={student}")
    nbgrader(root, "generate_feedback", WEEK, f"--student={student}")
    nbgrader(root, "release_feedback", WEEK, f"--student={student}")
    nbgrader(fetched.parent.parent, "fetch_feedback", WEEK)
    feedback = list(home.rglob(f"feedback/*/{WEEK}.html"))
    assert feedback, f"the student fetched no feedback: {sorted(p.relative_to(home) for p in home.rglob('*'))}"
    csv = tmp_path / "grades.csv"
    nbgrader(root, "export", f"--to={csv}")
    import csv as csvlib

    rows = [r for r in csvlib.DictReader(csv.open()) if r["student_id"] == student]
    assert len(rows) == 1, rows
    row = rows[0]
    # every test passes (the raw score is full marks), but the submission is late and the penalty takes it all
    assert float(row["raw_score"]) == float(row["max_score"]) > 0, row
    assert float(row["late_submission_penalty"]) == float(row["raw_score"]) and float(row["score"]) == 0, row
    assert "Score: 0.0" in feedback[0].read_text() or "late" in feedback[0].read_text().lower()
