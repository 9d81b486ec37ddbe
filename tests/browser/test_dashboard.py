"""The dashboard as a user meets it: Voilà serves notebooks/dashboard.ipynb, a real Chromium drives it.

Pick the bundled sample in the data picker, set a few parameters, train for real, click a cell of the
confusion matrix and see its photos, predict a photo in the preview, export and download the Core ML
model (checked by running it in numpy). Any error a widget, the page or the kernel shows fails the test.
Screenshots of every step go to artifacts/screenshots/, the server's log to artifacts/voila-*.log.

Chromium is Debian's (`/usr/bin/chromium`, `make chromium`); `playwright install` is never run.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "notebooks" / "dashboard.ipynb"
ARTIFACTS = REPO / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian: `apt-get install chromium`, or `make chromium`)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

# What a broken widget, cell or app looks like on the page.
ERROR_SELECTORS = {
    "a cell's error output": '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
    "a widget that failed to render": ".jupyter-widgets-error-widget",
    "an error in the app": ".cmlw-error, .cmlw-train-error, .cmlw-preview-error, .cmlw-picker-error",
    "a problem with the data": ".cmlw-problem-error",
    "a failed training": ".cmlw-state-failed",
}
ERROR_TEXTS = ("Traceback (most recent call last)", "Error displaying widget", "There was an error when executing cell")

MINUTE = 60_000  # ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def voila(notebook: Path, cache: Path, log_path: Path):
    """Voilà serving `notebook` on a free port; yields the URL. Stops it and every kernel it started."""
    import psutil

    port = _free_port()
    env = {**os.environ, "CREATEML_WIDGETS_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    voila_bin = Path(sys.executable).with_name("voila")
    cmd = [str(voila_bin) if voila_bin.exists() else "voila", str(notebook), "--no-browser",
           "--Voila.ip=127.0.0.1", f"--port={port}", "--show_tracebacks=True"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started: set = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"voila exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"voila did not listen on port {port} within 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/", lambda: started.update(psutil.Process(proc.pid).children(recursive=True))
    finally:
        with contextlib.suppress(psutil.Error):
            started.update(psutil.Process(proc.pid).children(recursive=True))  # kernels (own sessions)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _gone, alive = psutil.wait_procs(list(started), timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _gone, alive = psutil.wait_procs(alive, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        log.close()


class Page:
    """A Chromium page that records what goes wrong: console errors, page errors, failed local requests."""

    def __init__(self, browser, url: str):
        self.url = url
        self.problems: list[str] = []
        self.offline: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.problems.append(f"uncaught error in the page: {err}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)
        # Voilà's template links Font Awesome from a CDN. Third-party files are answered locally with an
        # empty file, so the test needs no network and a CDN hiccup cannot fail it; they are listed.
        self.page.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.url) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            self.offline.append(url)
            route.fulfill(status=200, body="", content_type="text/css" if url.endswith(".css") else "text/plain")

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text}")

    def _request_failed(self, request) -> None:
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status} for {response.url}")

    def errors_shown(self) -> list[str]:
        """Errors visible on the page now: error outputs, broken widgets, error messages, tracebacks."""
        found = []
        for what, selector in ERROR_SELECTORS.items():
            for el in self.page.query_selector_all(selector):
                text = (el.text_content() or "").strip()
                if text or what in ("a widget that failed to render", "a failed training"):
                    found.append(f"{what}: {text[:1500]}")
        body = self.page.evaluate("() => document.body ? document.body.innerText : ''")
        for needle in ERROR_TEXTS:
            if needle in body:
                at = body.index(needle)
                found.append(f"the page says {needle!r}: …{body[max(0, at - 200):at + 1500]}")
        return found

    def check(self, step: str) -> None:
        problems = self.errors_shown() + self.problems
        assert not problems, f"after '{step}':\n" + "\n".join(problems)

    def shot(self, name: str, selector: str | None = None) -> Path:
        """Screenshot the whole app, or one element of it. Voilà scrolls inside a container, which a
        full-page screenshot does not unroll: the window is made as tall as the app for the picture."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        size = self.page.viewport_size
        height = self.page.evaluate("() => { const app = document.querySelector('.cmlw-app');"
                                    " return app ? Math.ceil(app.getBoundingClientRect().height) + 200 : 0; }")
        try:
            if height > size["height"]:
                self.page.set_viewport_size({"width": size["width"], "height": min(height, 16000)})
            if selector is None:
                self.page.screenshot(path=path, full_page=True)
            else:
                self.page.locator(selector).first.screenshot(path=path)
        finally:
            self.page.set_viewport_size(size)
        return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def _voila_log_problems(log_path: Path) -> list[str]:
    text = log_path.read_text(errors="replace")
    return [text[max(0, i - 300):i + 2000] for i in _find_all(text, "Traceback (most recent call last)")]


def _find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at != -1:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def _heatmap_cells(page):
    """The confusion matrix's non-empty cells as (count, x, y) on screen, and its tick labels as
    (label, x, y): xticks (predicted) and yticks (true)."""
    page.locator(".cmlw-confusion-matrix-chart .js-plotly-plot").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    centre = "els => els.map(t => { const r = t.getBoundingClientRect(); " \
             "return [t.textContent.trim(), r.x + r.width / 2, r.y + r.height / 2]; })"
    chart = ".cmlw-confusion-matrix-chart"
    cells = page.eval_on_selector_all(f"{chart} .heatmaplayer text", centre)
    xticks = page.eval_on_selector_all(f"{chart} .xtick text", centre)
    yticks = page.eval_on_selector_all(f"{chart} .ytick text", centre)
    numbers = [(int(text), x, y) for text, x, y in cells if text.isdigit() and int(text) > 0]
    return numbers, (xticks, yticks)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_train_evaluate_preview_and_export_in_the_dashboard(browser, tmp_path):
    log_path = ARTIFACTS / "voila-dashboard.log"
    for old in SCREENSHOTS.glob("*.png") if SCREENSHOTS.exists() else []:
        old.unlink()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with voila(DASHBOARD, tmp_path / "cache", log_path) as (url, remember_children):
        ui = Page(browser, url)
        page = ui.page
        try:
            # 1. The dashboard renders: the app, its six sections, the picker on the bundled sample.
            page.goto(url, timeout=3 * MINUTE)
            page.wait_for_selector(".cmlw-app", timeout=3 * MINUTE)
            page.wait_for_selector(".cmlw-picker-ready", timeout=2 * MINUTE)
            remember_children()
            for section in ("data", "parameters", "training", "evaluation", "preview", "export"):
                assert page.is_visible(f".cmlw-section-{section}"), f"the {section} section is not shown"
            timings["rendered"] = time.monotonic() - t0
            ui.check("opening the dashboard")
            ui.shot("01-dashboard")

            # 2. Pick the sample in the DataSourcePicker: up to the data root, open sign-language-digits.
            page.click(".cmlw-picker-up")
            page.wait_for_function("() => document.querySelector('.cmlw-picker-path input').value === ''")
            option = page.wait_for_function(
                "() => [...document.querySelectorAll('.cmlw-picker-folders option')]"
                ".map(o => o.value).find(v => v.includes('sign-language-digits'))", timeout=MINUTE).json_value()
            page.select_option(".cmlw-picker-folders select", value=option)
            page.wait_for_function("() => document.querySelector('.cmlw-picker-path input').value "
                                   "=== 'sign-language-digits'", timeout=MINUTE)
            page.wait_for_selector(".cmlw-picker-ready", timeout=MINUTE)
            summary = page.inner_text(".cmlw-picker-summary")
            assert "10 labels" in summary and "200 images" in summary, summary
            labels = sorted(page.eval_on_selector_all(".cmlw-class-label", "els => els.map(e => e.textContent)"))
            assert labels == [str(i) for i in range(10)], labels
            assert page.locator(".cmlw-picker-classes img").count() >= 10  # thumbnails of every label
            ui.check("picking the sample data")
            ui.shot("02-data-picked", ".cmlw-section-data")

            # 3. Parameters: 10 iterations, a fixed 20% validation split with a seed.
            page.fill(".cmlw-param-max_iterations input", "10")
            page.select_option(".cmlw-param-validation select", label="fixed ratio")
            page.fill(".cmlw-param-validation-ratio input", "0.2")
            page.fill(".cmlw-param-validation-seed input", "3")
            page.wait_for_timeout(500)  # the form validates as one types
            field_errors = [e for e in page.eval_on_selector_all(".cmlw-field-error, .cmlw-form-error",
                                                                   "els => els.map(e => e.textContent.trim())") if e]
            assert not field_errors, field_errors
            ui.check("setting parameters")
            ui.shot("03-parameters", ".cmlw-section-parameters")

            # 4. Train, and follow it to the end.
            t_train = time.monotonic()
            page.click(".cmlw-train-button")
            page.wait_for_selector(".cmlw-training-progress .cmlw-state-running, .cmlw-state-done", timeout=MINUTE)
            ui.shot("04-training", ".cmlw-section-training")  # while it runs (unless it was quicker)
            page.wait_for_selector(".cmlw-state-done", timeout=4 * MINUTE)
            timings["training"] = time.monotonic() - t_train
            ui.shot("05-trained", ".cmlw-section-training")
            assert "done" in page.inner_text(".cmlw-train-message")
            counts = page.inner_text(".cmlw-progress-counts")
            assert counts.startswith("10 / 10"), counts
            page.wait_for_function(  # the loss curve has its points
                "() => document.querySelectorAll('.cmlw-progress-chart .scatterlayer .point').length >= 10",
                timeout=MINUTE)

            # 5. The confusion matrix: a Plotly heatmap of the 40 validation photos.
            page.wait_for_selector(".cmlw-confusion-matrix-chart .js-plotly-plot .heatmaplayer", timeout=MINUTE)
            page.wait_for_function("() => document.querySelectorAll("
                                   "'.cmlw-confusion-matrix-chart .heatmaplayer text').length > 0", timeout=MINUTE)
            assert "on 40 examples" in page.inner_text(".cmlw-cm-summary"), page.inner_text(".cmlw-cm-summary")
            numbers, _ticks = _heatmap_cells(page)
            assert sum(n for n, _, _ in numbers) == 40, numbers
            ui.check("training")
            ui.shot("06-confusion-matrix", ".cmlw-section-evaluation")

            # 6. Click the fullest cell: its photos appear, as many as the cell counts.
            numbers, (xticks, yticks) = _heatmap_cells(page)
            count, x, y = max(numbers)
            predicted_label = min(xticks, key=lambda t: abs(t[1] - x))[0]  # the column under the pointer
            true_label = min(yticks, key=lambda t: abs(t[2] - y))[0]  # the row
            page.mouse.move(x, y)
            page.mouse.click(x, y)
            page.wait_for_selector(".cmlw-cm-examples img", timeout=MINUTE)
            heading = page.inner_text(".cmlw-cm-selection")
            assert heading.startswith(f"True {true_label} · predicted {predicted_label} — {count} "), heading
            assert page.locator(".cmlw-cm-examples figure img").count() == count
            ui.check("clicking a confusion-matrix cell")
            ui.shot("07-cell-examples", ".cmlw-section-evaluation")

            # 7. Predict a photo in the preview: the photo and every label with its confidence.
            path = page.input_value(".cmlw-preview-path input")
            assert path.endswith((".JPG", ".jpg")), path
            page.click(".cmlw-preview-button")
            page.wait_for_selector(".cmlw-preview-top", timeout=2 * MINUTE)
            predicted = page.eval_on_selector_all(".cmlw-preview-results .cmlw-bar-label",
                                                  "els => els.map(e => e.textContent)")
            assert sorted(predicted) == labels, predicted
            assert page.locator(".cmlw-preview-image img").count() == 1
            top = page.inner_text(".cmlw-preview-top")
            assert top.split()[0] in labels and "%" in top, top
            ui.check("predicting in the preview")
            ui.shot("08-prediction", ".cmlw-section-preview")

            # 8. Export: a download link to the .mlmodel, which downloads and runs.
            page.click(".cmlw-export-button")
            link = page.wait_for_selector("a.cmlw-download", timeout=3 * MINUTE)
            name = link.get_attribute("download")
            assert name == "ImageClassifier.mlmodel", name
            assert link.get_attribute("href").startswith("data:application/octet-stream;base64,")
            with page.expect_download(timeout=MINUTE) as download:
                link.click()
            saved = tmp_path / name
            download.value.save_as(saved)
            ui.check("exporting")
            ui.shot("09-export", ".cmlw-section-export")
            ui.shot("10-dashboard-after-export")
            timings["total"] = time.monotonic() - t0
        finally:
            with contextlib.suppress(Exception):
                ui.shot("zz-last-state")
            page.close()
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))

    # The downloaded file is a Core ML image classifier over the ten labels, and it runs.
    from PIL import Image

    from createml_widgets.export import spec_eval

    photo = REPO / "createml_widgets" / "samples" / path
    out = spec_eval.evaluate(saved, {"image": Image.open(photo).convert("RGB").resize((224, 224))})
    assert sorted(out["classLabelProbs"]) == labels
    assert out["classLabel"] in labels and abs(sum(out["classLabelProbs"].values()) - 1) < 1e-3
    tracebacks = _voila_log_problems(log_path)
    assert not tracebacks, "the kernel or the server logged tracebacks:\n" + "\n---\n".join(tracebacks)


@pytest.mark.timeout(240)
def test_the_error_checks_see_a_broken_dashboard(browser, tmp_path):
    """The checks above must be able to fail: a notebook whose widget callback and cell break is caught."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import ipywidgets as w\nw.Button(description='fine')"),
        nbformat.v4.new_code_cell("raise RuntimeError('the dashboard broke')"),
    ])
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    log_path = ARTIFACTS / "voila-broken.log"
    with voila(broken, tmp_path / "cache", log_path) as (url, remember_children):
        ui = Page(browser, url)
        try:
            ui.page.goto(url, timeout=2 * MINUTE)
            ui.page.wait_for_selector(".widget-button", timeout=2 * MINUTE)
            ui.page.wait_for_function("() => document.body.innerText.includes('the dashboard broke')",
                                      timeout=MINUTE)
            remember_children()
            found = ui.errors_shown()
            assert any("the dashboard broke" in f for f in found), found
            with pytest.raises(AssertionError, match="the dashboard broke"):
                ui.check("opening a broken dashboard")
        finally:
            ui.page.close()
