"""JupyterLab in a real browser: a local JupyterLab server with a token, headless Chromium driven by selenium.

The toy notebook (a copy whose parameters cell asks for a tiny run) and the explorer notebook (on a committed
study) are opened in JupyterLab, run with Run All, saved; each must show its figure inline (a PNG ``img`` in
an output area, loaded) and hold no error output. A screenshot of each is kept under
``results/scratch/browser/`` (gitignored; the path is printed). Skips with the reason when Chromium, its
driver or selenium is missing (``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "results" / "scratch" / "browser"
TOKEN = "manifold-lab-browser-test"
pytestmark = pytest.mark.browser

TINY_TOY = {"D": 4, "steps": 20, "n_samples": 200, "sample_steps": 4, "threads": 1}


def _tools():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_parameters(src: Path, dst: Path, params: dict) -> Path:
    """A copy of a notebook whose parameters cell has ``params`` set (as a person would edit it)."""
    nb = json.loads(src.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).split("\n")
    for key, value in params.items():
        hit = [i for i, line in enumerate(lines) if line.startswith((f"{key}:", f"{key} ="))]
        assert hit, f"{src.name} has no parameter {key}"
        lines[hit[0]] = f"{key} = {value!r}"
    cell["source"] = "\n".join(lines)
    dst.write_text(json.dumps(nb, indent=1))
    return dst


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free local port (token auth), its root a scratch folder of notebooks."""
    _tools()
    work = tmp_path_factory.mktemp("lab")
    (work / "notebooks").mkdir()
    (work / "studies").symlink_to(ROOT / "studies")      # a project root: notebooks/ beside studies/
    port = _free_port()
    env = {**os.environ, "MANIFOLD_LAB_ROOT": str(work), "PYTHONPATH": f"{ROOT}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(work / "cfg")}
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={TOKEN}",
                             f"--ServerApp.root_dir={work / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
                             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (work / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
    yield {"url": f"http://127.0.0.1:{port}", "dir": work / "notebooks", "root": work}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _tools()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    yield drv
    drv.quit()


def _wait(fn, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_all_in_lab(browser, lab, name: str, timeout: float = 240) -> dict:
    """Open ``name`` in JupyterLab, Run All, wait for every cell, save; returns what the page and file show."""
    browser.get(f"{lab['url']}/lab/tree/{name}?token={TOKEN}")
    current = ("const p = window.jupyterapp && window.jupyterapp.shell.currentWidget; "
               f"const mine = !!(p && p.context && p.context.path === '{name}'); ")
    _wait(lambda: browser.execute_script(current + "return mine && !!p.node.querySelector('.jp-Cell')"), 120,
          f"{name} to open")
    idle = current + "return mine && p.sessionContext?.session?.kernel?.status === 'idle'"
    _wait(lambda: browser.execute_script(idle), 120, "the kernel to start")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state = (current + "const prompts = [...p.node.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
             ".map(e => e.textContent); return mine && prompts.some(t => /\\[\\d+\\]/.test(t)) && "
             "!prompts.some(t => t.includes('*')) && p.sessionContext?.session?.kernel?.status === 'idle'")
    # finished: the kernel idle, no cell queued or running ([*]), twice in a row (Run All stops at an error)
    _wait(lambda: browser.execute_script(state) and not time.sleep(1) and browser.execute_script(state), timeout,
          f"the cells of {name} to run")
    browser.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(2)
    images = browser.execute_script(
        current + "return [...p.node.querySelectorAll('.jp-OutputArea-output img')]"
        ".filter(i => i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 100).length")
    widgets = browser.execute_script(current + "return p.node.querySelectorAll('.jupyter-widgets, .widget-dropdown')"
                                     ".length")
    browser.execute_script(current + "const i = p.node.querySelector('.jp-OutputArea-output img'); "
                           "if (i) i.scrollIntoView({block: 'center'});")
    time.sleep(1)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{Path(name).stem}.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    saved = json.loads((lab["dir"] / name).read_text())
    outputs = [o for c in saved["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    return {"images": images, "widgets": widgets, "errors": errors, "outputs": outputs, "shot": shot}


def test_toy_notebook_runs_in_jupyterlab_and_shows_its_figure_inline(lab, browser):
    _with_parameters(ROOT / "notebooks" / "toy_manifold.ipynb", lab["dir"] / "toy_manifold.ipynb", TINY_TOY)
    got = run_all_in_lab(browser, lab, "toy_manifold.ipynb")
    assert not got["errors"], got["errors"]
    assert got["images"] >= 1, f"no figure shown inline (screenshot {got['shot']})"
    assert any("image/png" in o.get("data", {}) for o in got["outputs"])
    run = lab["root"] / "results" / "scratch" / "toy"       # relative out_dir: under the project root
    assert (run / "metrics.json").is_file() and (run / "fig_samples.png").is_file()
    assert not (lab["dir"] / "results").exists()


def test_explorer_notebook_runs_in_jupyterlab_on_a_committed_study(lab, browser):
    _with_parameters(ROOT / "notebooks" / "explore.ipynb", lab["dir"] / "explore.ipynb",
                     {"study": "toy_fig2", "results_dir": str(ROOT / "results")})
    got = run_all_in_lab(browser, lab, "explore.ipynb")
    assert not got["errors"], got["errors"]
    assert got["images"] >= 2, f"the study's figures are not shown inline (screenshot {got['shot']})"
    assert got["widgets"] >= 1, "the ipywidgets panel did not render"
