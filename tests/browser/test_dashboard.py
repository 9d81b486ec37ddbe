"""The dashboard as a user meets it: Voilà serves notebooks/dashboard.ipynb, a real Chromium drives it.

Voilà is started with the command `make dashboard` runs (read from the Makefile with `make -n`), so a
broken Makefile target fails here. Each scenario has its own server, page and kernel (one user's Binder
session); they share the feature cache:

- image: pick the bundled sample, set parameters, train, click a confusion-matrix cell and see its
  photos, predict a photo, export and download the Core ML model (checked by running it in numpy);
- cancel and resume: a long multilayer-perceptron run is followed live (a count below the total while
  it runs), cancelled (it stops where it was), resumed (it goes on from there) and finishes in full;
- hand pose: switch the task, see skeletons drawn on the sample's thumbnails, train, and predict a
  photo (the caption names the hand, the skeleton is drawn on it).

Any error a widget, the page or the kernel shows fails the test. The resident memory of the kernel
(with its worker processes) and of Voilà is sampled all along (psutil, 5 times a second) and must stay
under Binder's 2 GB. Screenshots of every step go to artifacts/screenshots/, the server's log to artifacts/voila-*.log,
timings and peak memory to artifacts/browser-timings.json.

Chromium is Debian's (`/usr/bin/chromium`, `make chromium`); `playwright install` is never run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = "notebooks/dashboard.ipynb"  # as the Makefile names it
ARTIFACTS = REPO / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
RESULTS_FILE = ARTIFACTS / "browser-timings.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian: `apt-get install chromium`, or `make chromium`)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
psutil = pytest.importorskip("psutil")

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
MEMORY_LIMIT = 2 * 1000**3  # bytes: Binder gives a session 2 GB (counted here as 10^9, the stricter reading)
RESULTS: dict[str, dict] = {"timings_s": {}, "peak_rss_mb": {}}
COUNTS = re.compile(r"^(\d+) / (\d+) (\w+)")


def _write_results() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    RESULTS["rss_limit_mb"] = MEMORY_LIMIT / 1e6
    RESULTS_FILE.write_text(json.dumps(RESULTS, indent=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_command(port: int, *make_vars: str) -> str:
    """The shell command `make dashboard PORT=port` runs to serve the dashboard, as `make -n` prints it.

    Its prerequisite (`install`) is printed before it when the virtualenv is out of date, never run:
    the test serves with what is installed, the last command of the recipe, the one that runs Voilà.
    """
    if shutil.which("make") is None:
        pytest.fail("`make` is not installed: the README's `make dashboard` cannot work")
    # Run as its own make, not as a sub-make of `make test` (which would add "make[1]: Entering
    # directory" lines and its own flags).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    # DASHBOARD_MAKE_VARS (e.g. "VENV=.binder-venv", from `make binder-check`) serves another environment.
    extra = shlex.split(os.environ.get("DASHBOARD_MAKE_VARS", ""))
    out = subprocess.run(["make", "--no-print-directory", "-n", "dashboard", f"PORT={port}", *extra, *make_vars],
                         cwd=REPO,
                         env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"`make -n dashboard` failed with {out.returncode}:\n{out.stdout}\n{out.stderr}"
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    assert lines, "`make -n dashboard` prints no command"
    command = lines[-1]
    words = shlex.split(command)
    assert any(Path(w).name == "voila" for w in words), f"`make dashboard` does not end by running Voilà: {command}"
    assert DASHBOARD in words, f"`make dashboard` does not serve {DASHBOARD}: {command}"
    return command


class MemoryWatch(threading.Thread):
    """Samples the resident memory of a process and everything under it, a few times a second.

    `peak_total`: the most the whole tree held at once (what a Binder session is charged);
    `kernel_peak(pids)`: the most those kernels held, each with its own worker processes.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(name="rss-watch", daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self._kernel_peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def _tree(self) -> list:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _kernel_roots(procs) -> list:
        """The kernels among `procs`: ipykernel processes whose parent is not one (a worker a kernel forks
        carries its command line until it execs)."""
        cmd = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                cmd[p.pid] = " ".join(p.cmdline())
        out = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if "ipykernel" in cmd.get(p.pid, "") and "ipykernel" not in cmd.get(p.ppid(), ""):
                    out.append(p)
        return out

    def sample(self) -> None:
        procs = self._tree()
        rss = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss[p.pid] = p.memory_info().rss
        peaks = {}
        for k in self._kernel_roots(procs):
            with contextlib.suppress(psutil.Error):
                peaks[k.pid] = sum(rss.get(q.pid, 0) for q in [k, *k.children(recursive=True)])
        with self._lock:
            self.peak_total = max(self.peak_total, sum(rss.values()))
            for pid, value in peaks.items():
                self._kernel_peaks[pid] = max(self._kernel_peaks.get(pid, 0), value)

    def kernels(self) -> set[int]:
        """The kernels alive now."""
        return {k.pid for k in self._kernel_roots(self._tree())}

    def kernel_peak(self, pids) -> int:
        with self._lock:
            return sum(self._kernel_peaks.get(pid, 0) for pid in pids)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log_path: Path, memory: MemoryWatch):
        self.url, self.proc, self.log_path, self.memory = url, proc, log_path, memory

    def log_text(self, start: int = 0) -> str:
        return self.log_path.read_text(errors="replace")[start:]


@contextlib.contextmanager
def serve(command: str, port: int, cache: Path, log_path: Path):
    """Run `command` (a shell command line, as make would) from the repository root and wait for it to
    listen on `port`; yields a Server. Stops it and every kernel it started; samples their memory."""
    env = {**os.environ, "CREATEML_WIDGETS_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    memory = MemoryWatch(proc.pid)
    memory.start()
    started: set = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`{command}` exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"`{command}` did not listen on port {port} within 120 s:\n"
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(f"http://127.0.0.1:{port}/", proc, log_path, memory)
    finally:
        memory.stop()
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


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The feature cache, shared by the scenarios as it is by one user's runs; starts empty."""
    for old in SCREENSHOTS.glob("*.png") if SCREENSHOTS.exists() else []:
        old.unlink()
    return tmp_path_factory.mktemp("cache")


class Visit:
    """What `open_dashboard` yields: the page (`ui`) and its timings."""

    def __init__(self, ui: Page, name: str, timings: dict):
        self.ui, self.page, self.name, self.timings = ui, ui.page, name, timings
        self.t0 = time.monotonic()

    def mark(self, what: str) -> None:
        self.timings[what] = round(time.monotonic() - self.t0, 1)


@contextlib.contextmanager
def open_dashboard(browser, cache: Path, name: str, pages: int = 1):
    """Serve the dashboard with the command of `make dashboard` (one server per scenario, as one user's
    Binder session), open it in Chromium and wait for the app and its data picker.

    Afterwards: the peak resident memory of the kernel (with its worker processes) and of everything the
    server ran must be under the limit, and the server's log must hold no traceback. `pages`: the page
    loads the scenario makes (a reload is one more, with a kernel of its own)."""
    port = _free_port()
    command = dashboard_command(port)
    RESULTS["command"] = command
    with serve(command, port, cache, ARTIFACTS / f"voila-{name}.log") as server:
        visit = Visit(Page(browser, server.url), name, RESULTS["timings_s"].setdefault(name, {}))
        page = visit.page
        failed = True
        kernels: set[int] = set()
        try:
            page.goto(server.url, timeout=3 * MINUTE)
            page.wait_for_selector(".cmlw-app", timeout=3 * MINUTE)
            page.wait_for_selector(".cmlw-picker-ready", timeout=2 * MINUTE)
            kernels = server.memory.kernels()
            visit.mark("rendered")
            visit.ui.check("opening the dashboard")
            yield visit
            visit.mark("total")
            failed = False
        finally:
            if failed:
                with contextlib.suppress(Exception):
                    visit.ui.shot(f"{name}-zz-failed")
            kernels |= server.memory.kernels()
            server.memory.sample()
            page.close()
            kernel_peak, total_peak = server.memory.kernel_peak(kernels), server.memory.peak_total
            RESULTS["peak_rss_mb"][name] = {"kernel": round(kernel_peak / 1e6), "voila_and_kernel": round(total_peak / 1e6)}
            _write_results()
        tracebacks = _log_problems(server.log_text())
    assert len(kernels) == pages, f"the page started {len(kernels)} kernels, not {pages}"
    assert 0 < kernel_peak <= total_peak < MEMORY_LIMIT, (
        f"resident memory peaked at {kernel_peak / 1e6:.0f} MB in the kernel and its workers, "
        f"{total_peak / 1e6:.0f} MB with Voilà; the limit is {MEMORY_LIMIT / 1e6:.0f} MB")
    assert not tracebacks, "the kernel or the server logged tracebacks:\n" + "\n---\n".join(tracebacks)


def _counts(page) -> tuple[int, int, str]:
    """The progress counts shown now: (done, total, unit), e.g. (12, 150, 'iterations')."""
    text = page.inner_text(".cmlw-progress-counts").strip()
    m = COUNTS.match(text)
    assert m, f"the progress shows no counts: {text!r}"
    return int(m[1]), int(m[2]), m[3]


# Counts pixels of the skeleton's colour (draw_hand's (255, 64, 32)) in the images under a selector,
# decoded by the browser itself; the sample's photos have none (skin, walls and clothes are not that red).
RED_PIXELS_JS = """async (selector) => {
  const out = [];
  for (const img of document.querySelectorAll(selector)) {
    await img.decode().catch(() => {});
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let red = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] > 150 && d[i] - d[i + 1] > 90 && d[i] - d[i + 2] > 90) red++;
    }
    const fig = img.closest('figure');
    out.push([fig ? fig.title : '', red, c.width * c.height]);
  }
  return out;
}"""

# Records every change of the progress counts and state, every 50 ms, in window.__cmlwCounts.
RECORD_COUNTS_JS = """() => {
  window.__cmlwCounts = [];
  let last = null;
  setInterval(() => {
    const counts = document.querySelector('.cmlw-progress-counts');
    const state = document.querySelector('.cmlw-training-progress [class^="cmlw-state-"]');
    const now = [(counts ? counts.innerText.trim() : ''), (state ? state.className.replace('cmlw-state-', '') : '')];
    if (!last || now[0] !== last[0] || now[1] !== last[1]) { window.__cmlwCounts.push(now); last = now; }
  }, 50);
}"""


def _log_problems(text: str) -> list[str]:
    """The tracebacks in a server log, less tornado's note that a message was still being written to a
    websocket the page had just closed ("Task exception was never retrieved … WebSocketClosedError"):
    a closed page, not a fault of the kernel or the app."""
    found = [text[max(0, i - 300):i + 2000] for i in _find_all(text, "Traceback (most recent call last)")]
    return [t for t in found if not ("WebSocketClosedError" in t and "tornado/websocket.py" in t
                                     and "createml_widgets" not in t)]


def _find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at != -1:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def _heatmap_cells(page):
    """The confusion matrix's non-empty cells as (count, x, y) on screen, and its tick labels as
    (label, x, y): xticks (predicted) and yticks (true)."""
    page.locator(".cmlw-confusion-matrix-chart .cmlw-heatmap-svg").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    centre = "els => els.map(t => { const r = t.getBoundingClientRect(); " \
             "return [t.textContent.trim(), r.x + r.width / 2, r.y + r.height / 2]; })"
    chart = ".cmlw-confusion-matrix-chart"
    cells = page.eval_on_selector_all(f"{chart} .cmlw-heatmap-count", centre)
    xticks = page.eval_on_selector_all(f"{chart} .cmlw-heatmap-xtick", centre)
    yticks = page.eval_on_selector_all(f"{chart} .cmlw-heatmap-ytick", centre)
    numbers = [(int(text), x, y) for text, x, y in cells if text.isdigit() and int(text) > 0]
    return numbers, (xticks, yticks)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_train_evaluate_preview_and_export_in_the_dashboard(browser, cache, tmp_path):
    with open_dashboard(browser, cache, "image") as visit:
        ui, page = visit.ui, visit.page
        # 1. The dashboard renders: the app, its six sections, the picker on the bundled sample.
        for section in ("data", "parameters", "training", "evaluation", "preview", "export"):
            assert page.is_visible(f".cmlw-section-{section}"), f"the {section} section is not shown"
        ui.shot("image-01-dashboard")

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
        # The data root is usable too (two labels: its two folders); wait for the sample's own table.
        page.wait_for_function("() => document.querySelectorAll('.cmlw-class-label').length === 10", timeout=MINUTE)
        summary = page.inner_text(".cmlw-picker-summary")
        assert "10 labels" in summary and "200 images" in summary, summary
        labels = sorted(page.eval_on_selector_all(".cmlw-class-label", "els => els.map(e => e.textContent)"))
        assert labels == [str(i) for i in range(10)], labels
        assert page.locator(".cmlw-picker-classes img").count() >= 10  # thumbnails of every label
        ui.check("picking the sample data")
        ui.shot("image-02-data-picked", ".cmlw-section-data")

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
        ui.shot("image-03-parameters", ".cmlw-section-parameters")

        # 4. Train, and follow it to the end (quick: 10 iterations; the next test follows a long run).
        page.click(".cmlw-train-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-running, .cmlw-state-done", timeout=MINUTE)
        page.wait_for_selector(".cmlw-state-done", timeout=4 * MINUTE)
        visit.mark("trained")
        ui.shot("image-05-trained", ".cmlw-section-training")
        assert "done" in page.inner_text(".cmlw-train-message")
        counts = page.inner_text(".cmlw-progress-counts")
        assert counts.startswith("10 / 10"), counts
        page.wait_for_function(  # the loss curve has its points
            "() => document.querySelectorAll('.cmlw-progress-chart .cmlw-chart-point').length >= 10",
            timeout=MINUTE)
        # Hovering the loss panel shows the values at the iteration under the pointer (the last one, right).
        hit = page.locator(".cmlw-progress-chart .cmlw-chart-panel[data-panel='0'] .cmlw-chart-hit")
        hit.scroll_into_view_if_needed()
        plot = hit.bounding_box()
        page.mouse.move(plot["x"] + plot["width"] - 2, plot["y"] + plot["height"] / 2)
        tip = page.wait_for_selector(".cmlw-progress-chart .cmlw-chart-tip", state="visible", timeout=MINUTE).inner_text()
        assert tip.startswith("iteration 10") and re.search(r"training loss: \d+\.\d{4}", tip), tip
        page.mouse.move(0, 0)

        # 5. The confusion matrix: an SVG heatmap of the 40 validation photos.
        page.wait_for_selector(".cmlw-confusion-matrix-chart .cmlw-heatmap-cell", timeout=MINUTE)
        page.wait_for_function("() => document.querySelectorAll("
                               "'.cmlw-confusion-matrix-chart .cmlw-heatmap-count').length > 0", timeout=MINUTE)
        assert "on 40 examples" in page.inner_text(".cmlw-cm-summary"), page.inner_text(".cmlw-cm-summary")
        numbers, _ticks = _heatmap_cells(page)
        assert sum(n for n, _, _ in numbers) == 40, numbers
        ui.check("training")
        ui.shot("image-06-confusion-matrix", ".cmlw-section-evaluation")

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
        # The kernel selected that pair: the cell is outlined, the dropdowns name it.
        outlined = page.eval_on_selector_all(".cmlw-heatmap-selected",
                                             "els => els.map(e => [e.dataset.true, e.dataset.predicted])")
        assert outlined == [[true_label, predicted_label]], outlined
        chosen = [page.eval_on_selector(f"{box} select", "s => s.options[s.selectedIndex].textContent")
                  for box in (".cmlw-cm-true", ".cmlw-cm-predicted")]
        assert chosen == [true_label, predicted_label], chosen
        ui.check("clicking a confusion-matrix cell")
        ui.shot("image-07-cell-examples", ".cmlw-section-evaluation")

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
        ui.shot("image-08-prediction", ".cmlw-section-preview")

        # 8. Export: a download link to the .mlmodel, which downloads and runs.
        page.click(".cmlw-export-button")
        link = page.wait_for_selector("a.cmlw-download", timeout=3 * MINUTE)
        name = link.get_attribute("download")
        assert name == "ImageClassifier.mlmodel", name
        # the file is not in the page: the click fetches it from the kernel (a widget message) as a Blob
        assert not link.get_attribute("href").startswith("data:"), link.get_attribute("href")[:80]
        digest, size = link.get_attribute("data-sha256"), int(link.get_attribute("data-size"))
        with page.expect_download(timeout=MINUTE) as download:
            link.click()
        saved = tmp_path / name
        download.value.save_as(saved)
        assert download.value.suggested_filename == name
        assert saved.stat().st_size == size and hashlib.sha256(saved.read_bytes()).hexdigest() == digest
        ui.check("exporting")
        ui.shot("image-09-export", ".cmlw-section-export")
        ui.shot("image-10-dashboard-after-export")

    # The downloaded file is a Core ML image classifier over the ten labels, and it runs.
    from PIL import Image

    from createml_widgets.export import spec_eval

    photo = REPO / "createml_widgets" / "samples" / path
    out = spec_eval.evaluate(saved, {"image": Image.open(photo).convert("RGB").resize((299, 299))})
    assert sorted(out["classLabelProbs"]) == labels
    assert out["classLabel"] in labels and abs(sum(out["classLabelProbs"].values()) - 1) < 1e-3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_follow_cancel_and_resume_a_long_training_in_the_dashboard(browser, cache):
    """A multilayer perceptron for 500 iterations: seen while it runs, cancelled part way, resumed to the end.

    An iteration takes 10 ms (an idle machine) to 60 ms (a busy one): 500 leave the cancel seconds to arrive."""
    total = 500
    with open_dashboard(browser, cache, "cancel_resume") as visit:
        ui, page = visit.ui, visit.page
        assert "200 images" in page.inner_text(".cmlw-picker-summary")  # the picker opens on the sample

        page.select_option(".cmlw-param-classifier select", label="neural network (multilayer perceptron)")
        page.wait_for_selector(".cmlw-param-layer-sizes input", state="visible", timeout=MINUTE)
        assert page.input_value(".cmlw-param-layer-sizes input") == "128, 64"
        page.fill(".cmlw-param-max_iterations input", str(total))
        page.wait_for_timeout(500)  # the form validates as one types
        field_errors = [e for e in page.eval_on_selector_all(".cmlw-field-error, .cmlw-form-error",
                                                               "els => els.map(e => e.textContent.trim())") if e]
        assert not field_errors, field_errors
        ui.check("choosing a multilayer perceptron")

        # 1. Train, and see it run: a count of iterations below the total, Cancel on, Resume off.
        page.evaluate(RECORD_COUNTS_JS)
        page.click(".cmlw-train-button")
        page.wait_for_function(
            "() => { const m = /^(\\d+) \\/ (\\d+) iterations/.exec("
            "(document.querySelector('.cmlw-progress-counts') || {innerText: ''}).innerText.trim());"
            " return m && +m[1] >= 3 && document.querySelector('.cmlw-training-progress .cmlw-state-running'); }",
            timeout=3 * MINUTE)
        running, shown_total, unit = _counts(page)
        assert unit == "iterations" and shown_total == total and 3 <= running < total, (running, shown_total, unit)
        assert page.is_enabled(".cmlw-cancel-button") and page.is_disabled(".cmlw-resume-button")
        assert page.is_disabled(".cmlw-train-button")  # no second run while one runs
        assert "left" in page.inner_text(".cmlw-progress-counts")  # a time estimate while it runs
        visit.mark("running")
        ui.check("training")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # quick, while it runs: not Page.shot's resizing
        page.locator(".cmlw-section-training").screenshot(path=SCREENSHOTS / "resume-0-running.png")

        # 2. Cancel: it stops part way and stays stopped; Resume is offered, there is nothing to export.
        page.click(".cmlw-cancel-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-cancelled", timeout=MINUTE)
        visit.mark("cancelled")
        stopped, shown_total, unit = _counts(page)
        assert unit == "iterations" and running <= stopped < total, (running, stopped, total)
        assert "cancelled" in page.inner_text(".cmlw-progress-phase")
        assert "Resume" in page.inner_text(".cmlw-train-message")
        assert page.is_enabled(".cmlw-resume-button") and page.is_disabled(".cmlw-cancel-button")
        assert page.is_enabled(".cmlw-train-button") and page.is_disabled(".cmlw-export-button")
        ui.shot("resume-1-cancelled", ".cmlw-section-training")
        page.wait_for_timeout(1500)
        assert _counts(page)[0] == stopped, "training went on after it was cancelled"
        ui.check("cancelling")

        # 3. Resume: it goes on from where it stopped, live, to the full count.
        page.click(".cmlw-resume-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-done", timeout=3 * MINUTE)
        visit.mark("resumed_and_done")
        assert _counts(page) == (total, total, "iterations"), page.inner_text(".cmlw-progress-counts")
        assert "done" in page.inner_text(".cmlw-train-message")
        seen = page.evaluate("() => window.__cmlwCounts")
        cancelled_at = next(i for i, (_text, state) in enumerate(seen) if state == "cancelled")
        before = [int(m[1]) for text, state in seen[:cancelled_at]
                  if state == "running" and (m := COUNTS.match(text)) and m[3] == "iterations"]
        # (the count and the state are two messages: a count drawn just after "cancelled" may still be the
        # iteration before the stop; what Resume shows is read once it runs again)
        after = [int(m[1]) for text, state in seen[cancelled_at:]
                 if state in ("running", "done") and (m := COUNTS.match(text)) and m[3] == "iterations"]
        assert before and max(before) < total, seen[:cancelled_at]
        assert after and min(after) >= stopped, f"Resume started over instead of going on from {stopped}: {after}"
        assert any(stopped < n < total for n in after), f"the resumed run was not shown while it ran: {after}"
        assert after == sorted(after), f"the count went backwards: {after}"
        # the loss curve has every iteration, those before the cancel and those after it
        page.wait_for_function(
            f"() => {{ const t = document.querySelector('.cmlw-progress-chart .cmlw-chart-line[data-key=\"loss\"]');"
            f" return t && t.getAttribute('points').trim().split(/\\s+/).length === {total}; }}", timeout=MINUTE)
        page.wait_for_selector(".cmlw-confusion-matrix-chart .cmlw-heatmap-cell", timeout=MINUTE)
        # enabled in the same step as the metrics, but its message can reach the page just after theirs
        page.wait_for_selector(".cmlw-export-button:not(:disabled)", timeout=MINUTE)
        ui.check("resuming")
        ui.shot("resume-2-done", ".cmlw-section-training")
        ui.shot("resume-3-dashboard")
        RESULTS["cancel_resume_counts"] = {"running": running, "cancelled": stopped, "total": total}


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_a_reload_mid_training_offers_resume_and_resume_continues(browser, cache):
    """A reload while a long run trains: the new page (a new kernel) finds the session the first page's
    run left on disk, shows where it stopped with Resume on, and Resume goes on from there to the end."""
    total = 400
    with open_dashboard(browser, cache, "reload_resume", pages=2) as visit:
        ui, page = visit.ui, visit.page
        page.select_option(".cmlw-param-classifier select", label="neural network (multilayer perceptron)")
        page.wait_for_selector(".cmlw-param-layer-sizes input", state="visible", timeout=MINUTE)
        page.fill(".cmlw-param-max_iterations input", str(total))
        page.wait_for_timeout(500)
        page.click(".cmlw-train-button")
        page.wait_for_function(
            "() => { const m = /^(\\d+) \\/ (\\d+) iterations/.exec("
            "(document.querySelector('.cmlw-progress-counts') || {innerText: ''}).innerText.trim());"
            " return m && +m[1] >= 15 && document.querySelector('.cmlw-training-progress .cmlw-state-running'); }",
            timeout=3 * MINUTE)
        page.on("dialog", lambda dialog: dialog.accept())  # "leave the page while it trains?"
        page.reload(timeout=3 * MINUTE)
        page.wait_for_selector(".cmlw-picker-ready", timeout=3 * MINUTE)
        visit.mark("reloaded")
        # the new page: the run stopped where the first page's session last saved it, Resume on
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-cancelled", timeout=MINUTE)
        message = page.inner_text(".cmlw-train-message")
        assert "stopped at iteration" in message and "Resume" in message, message
        stopped, shown_total, unit = _counts(page)
        assert unit == "iterations" and shown_total == total and 10 <= stopped < total, (stopped, shown_total)
        assert page.is_enabled(".cmlw-resume-button") and page.is_enabled(".cmlw-train-button")
        assert page.input_value(".cmlw-param-max_iterations input") == str(total)  # its parameters
        ui.shot("reload-1-resume-offered", ".cmlw-section-training")
        # Voila's own shutdown beacon of the page left is refused (403, voila issue #1458; see test_classroom):
        # that refusal and the console's note of it are the only problems allowed
        beacon = [p for p in ui.problems if p.startswith("HTTP 403 for ") and "/voila/api/shutdown/" in p]
        if beacon:
            note = "console error: Failed to load resource: the server responded with a status of 403 (Forbidden)"
            ui.problems = [p for p in ui.problems if p not in beacon and p != note]
        ui.check("reloading mid-training")
        page.evaluate(RECORD_COUNTS_JS)
        # the first page's kernel may still hold the session (until it stops its run on hearing the page was
        # left, or is culled after KERNEL_IDLE_S): Resume then waits for it and goes on from where it left it
        page.click(".cmlw-resume-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-done", timeout=5 * MINUTE)
        visit.mark("resumed_and_done")
        assert _counts(page) == (total, total, "iterations"), page.inner_text(".cmlw-progress-counts")
        after = [int(m[1]) for text, state in page.evaluate("() => window.__cmlwCounts")
                 if state in ("running", "done") and (m := COUNTS.match(text)) and m[3] == "iterations"]
        assert after and min(after) >= stopped, f"Resume started over instead of going on from {stopped}: {after}"
        page.wait_for_selector(".cmlw-confusion-matrix-chart .cmlw-heatmap-cell", timeout=MINUTE)
        ui.check("resuming after the reload")
        ui.shot("reload-2-done", ".cmlw-section-training")
        waited = [state for _text, state in page.evaluate("() => window.__cmlwCounts") if state == "waiting"]
        RESULTS["reload_resume_counts"] = {"stopped": stopped, "total": total, "waited_samples": len(waited)}


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_hand_pose_classifier_in_the_dashboard(browser, cache):
    """Switch to the hand pose task: skeletons on the sample's thumbnails, train, predict a photo."""
    with open_dashboard(browser, cache, "hand_pose") as visit:
        ui, page = visit.ui, visit.page
        thumbs = ".cmlw-picker-classes figure.cmlw-thumb img"
        # The image task's thumbnails of the sample, for comparison: the same photos without skeletons.
        plain = {title: red for title, red, _n in page.evaluate(RED_PIXELS_JS, thumbs)}
        assert len(plain) >= 20, plain

        # 1. Switch the task with the toggle buttons; the app is rebuilt for hand poses.
        page.locator(".cmlw-task-select button", has_text="Hand Pose Classifier").click()
        page.wait_for_selector(".cmlw-param-maximum_iterations input", timeout=2 * MINUTE)
        page.wait_for_selector(".cmlw-picker-ready", timeout=2 * MINUTE)
        visit.mark("switched")
        assert "Hand Pose Classifier" in page.inner_text(".cmlw-app-title")
        assert page.locator(".cmlw-task-select button.mod-active").inner_text().strip() == "Hand Pose Classifier"
        summary = page.inner_text(".cmlw-picker-summary")
        assert "10 labels" in summary and "200 images" in summary, summary
        assert page.locator(".cmlw-thumb-missing").count() == 0
        drawn = page.evaluate(RED_PIXELS_JS, thumbs)
        assert len(drawn) == 20, drawn  # two photos a label
        for title, red, _n in drawn:
            assert red >= 20, f"no skeleton drawn on the thumbnail of {title} ({red} skeleton-red pixels)"
            assert plain.get(title, 0) <= 3, f"{title} is that red without a skeleton: the check proves nothing"
        ui.check("switching to hand poses")
        ui.shot("handpose-1-data", ".cmlw-section-data")

        # 2. Train a few iterations (the keypoints of 200 photos are extracted first).
        page.fill(".cmlw-param-maximum_iterations input", "10")
        page.wait_for_timeout(500)
        page.click(".cmlw-train-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-done", timeout=4 * MINUTE)
        visit.mark("trained")
        assert _counts(page) == (10, 10, "iterations"), page.inner_text(".cmlw-progress-counts")
        page.wait_for_selector(".cmlw-confusion-matrix-chart .cmlw-heatmap-cell", timeout=MINUTE)
        ui.check("training hand poses")
        ui.shot("handpose-2-trained", ".cmlw-section-training")

        # 3. Predict a photo: the photo with its skeleton, the hand named, every label with a confidence.
        path = page.input_value(".cmlw-preview-path input")
        assert path.startswith("sign-language-digits/") and path.endswith((".JPG", ".jpg")), path
        page.click(".cmlw-preview-button")
        page.wait_for_selector(".cmlw-preview-top", timeout=2 * MINUTE)
        visit.mark("predicted")
        caption = page.inner_text(".cmlw-preview-image")
        assert re.search(rf"{re.escape(Path(path).name)} · (left|right) hand", caption), caption
        [(_title, red, pixels)] = page.evaluate(RED_PIXELS_JS, ".cmlw-preview-image img")
        assert red >= 100, f"no skeleton on the predicted photo ({red} of {pixels} pixels skeleton-red)"
        predicted = page.eval_on_selector_all(".cmlw-preview-results .cmlw-bar-label",
                                              "els => els.map(e => e.textContent)")
        assert sorted(predicted) == [str(i) for i in range(10)], predicted
        top = page.inner_text(".cmlw-preview-top")
        assert top.split()[0] in predicted and "%" in top, top
        ui.check("predicting a hand pose")
        ui.shot("handpose-3-prediction", ".cmlw-section-preview")
        ui.shot("handpose-4-dashboard")


@pytest.mark.timeout(240)
def test_the_error_checks_see_a_broken_dashboard(browser, tmp_path):
    """The checks above must be able to fail: a notebook whose cell breaks, served as `make dashboard`
    serves the dashboard, is caught on the page (Voilà hides the traceback there: no --show_tracebacks)
    and in the server's log (where the traceback is)."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import ipywidgets as w\nw.Button(description='fine')"),
        nbformat.v4.new_code_cell("raise RuntimeError('the dashboard broke')"),
    ])
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    port = _free_port()
    words = shlex.split(dashboard_command(port))
    words[words.index(DASHBOARD)] = str(broken)
    with serve(shlex.join(words), port, tmp_path / "cache", ARTIFACTS / "voila-broken.log") as server:
        ui = Page(browser, server.url)
        try:
            ui.page.goto(server.url, timeout=2 * MINUTE)
            ui.page.wait_for_selector(".widget-button", timeout=2 * MINUTE)
            ui.page.wait_for_function("() => document.body.innerText.includes('There was an error when executing cell')",
                                      timeout=MINUTE)
            found = ui.errors_shown()
            assert any("There was an error when executing cell [2]" in f for f in found), found
            with pytest.raises(AssertionError, match="executing cell"):
                ui.check("opening a broken dashboard")
        finally:
            ui.page.close()
        tracebacks = _log_problems(server.log_text())
    assert any("the dashboard broke" in t for t in tracebacks), tracebacks


@pytest.mark.timeout(180)
def test_leaving_the_dashboard_shuts_its_kernel_down(browser, tmp_path):
    """A kernel whose page was closed (or reloaded) is shut down, so a Binder session holds only the
    kernels of the pages open in it. Voilà's own shutdown beacon on `beforeunload` is refused (403: it
    posts without the _xsrf cookie the server never set, voila issue #1458), so `make dashboard` culls
    kernels left without a page; here with short idle times passed to make (KERNEL_IDLE_S)."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import ipywidgets as w\nw.Button(description='fine')")])
    notebook = tmp_path / "widget.ipynb"
    nbformat.write(nb, notebook)
    port = _free_port()
    words = shlex.split(dashboard_command(port, "KERNEL_IDLE_S=3", "KERNEL_CULL_INTERVAL_S=1"))
    words[words.index(DASHBOARD)] = str(notebook)
    with serve(shlex.join(words), port, tmp_path / "cache", ARTIFACTS / "voila-leave.log") as server:
        ui = Page(browser, server.url)
        ui.page.goto(server.url, timeout=2 * MINUTE)
        ui.page.wait_for_selector(".widget-button", timeout=2 * MINUTE)
        kernels = [psutil.Process(pid) for pid in server.memory.kernels()]
        assert len(kernels) == 1, kernels
        ui.page.wait_for_timeout(6000)  # twice the idle time: a kernel with its page open is never culled
        assert kernels[0].is_running(), "the kernel of an open page was shut down"
        ui.page.click(".widget-button")
        # What closing the tab fires (dispatched too: headless Chromium may drop a beacon sent while closing).
        ui.page.evaluate("() => window.dispatchEvent(new Event('beforeunload'))")
        ui.page.close(run_before_unload=True)
        _gone, alive = psutil.wait_procs(kernels, timeout=20)
        refused = [line for line in server.log_text().splitlines() if "api/shutdown" in line]
        assert not alive, "the kernel is still running after its page was left:\n" + "\n".join(refused)
