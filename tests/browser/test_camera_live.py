"""The camera in the dashboard, with real hands: Chromium's fake camera plays an MJPEG file made from
the bundled sign-language photos (a real hand showing "5" for 4 s, then "1" for 4 s, over and over).

Served by the command of `make dashboard` (test_dashboard's helpers), over a data folder of its own:

- record photos of two labels with Snap (each photo taken while the camera shows that label's hand:
  a coloured square in the corner of the fake video says which), see the counts, train a hand pose
  classifier on them, and watch the Live tab name the hand shown — it follows the camera from "5" to
  "1" and back; the browser round trip (frame captured → answer drawn) is measured, and the kernel's
  memory stays under Binder's 2 GB;
- record a clip for a hand action label with Record;
- refused permission: a Chromium without the fake permission prompt says so in the widget, and the rest
  of the app works on.

Screenshots go to artifacts/screenshots/camera-*.png, the figures to artifacts/camera-live.json.
"""
from __future__ import annotations

import io
import json
import shutil
import statistics

import numpy as np
import pytest
from test_dashboard import ARTIFACTS, CHROMIUM, MINUTE, open_dashboard, sync_api

from createml_widgets import samples

pytestmark = pytest.mark.browser

FIGURES_FILE = ARTIFACTS / "camera-live.json"
SEGMENT_S = 4.0
# The hand each stretch of the fake video shows, and the colour of the square marking it.
SEGMENTS = (("5", "five", (255, 0, 0)), ("1", "one", (0, 0, 255)))
COLOURS = {"five": "red", "one": "blue"}
PHOTOS_PER_LABEL = 8

# The colour of the marker in the frame the camera shows now (read from the widget's own <video>).
MARKER_JS = """(video) => {
  const c = document.createElement('canvas'); c.width = 8; c.height = 8;
  const ctx = c.getContext('2d');
  ctx.drawImage(video, 4, 4, 40, 40, 0, 0, 8, 8);  // the 48-px square in the frame's top left corner
  const d = ctx.getImageData(4, 4, 1, 1).data;
  if (d[0] > 180 && d[1] < 90 && d[2] < 90) return 'red';
  if (d[2] > 180 && d[0] < 90 && d[1] < 90) return 'blue';
  return 'other';
}"""

# Snap, with the marker read just before and just after the click: the photo is drawn from the video in
# the click handler itself, so when both agree the photo shows that hand.
SNAP_JS = """([video, button, marker]) => {
  const colour = eval(marker);
  const before = colour(video);
  button.click();
  return [before, colour(video)];
}"""

# Every 100 ms: the marker shown and the label drawn over the live stream.
WATCH_LIVE_JS = """([video, caption, marker, ms]) => new Promise((resolve) => {
  const colour = eval(marker);
  const out = [];
  const began = performance.now();
  const timer = setInterval(() => {
    out.push([Math.round(performance.now() - began), colour(video), caption.dataset.label || '']);
    if (performance.now() - began > ms) { clearInterval(timer); resolve(out); }
  }, 100);
})"""


def make_fake_camera_file(path, seconds: float = SEGMENT_S) -> None:
    """An MJPEG file (640x480 JPEG frames one after another, as Chromium's fake camera reads it) of real
    hands: each digit's photo held still on a neutral background for `seconds`, a marker in the corner."""
    from PIL import Image

    from createml_widgets.samples.make_clips import digit_photos, render_frames

    with open(path, "wb") as out:
        for k, (digit, _label, colour) in enumerate(SEGMENTS):
            for frame in render_frames(digit_photos(digit)[2:3], "hold", fps=30, seconds=seconds, size=(640, 480),
                                       seed=k):
                frame = frame.copy()
                frame[:48, :48] = colour
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, "JPEG", quality=85)
                out.write(buf.getvalue())


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory):
    path = tmp_path_factory.mktemp("camera") / "hands.mjpeg"
    make_fake_camera_file(path)
    return path


def _launch(playwright, *args):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", *args])


@pytest.fixture(scope="module")
def playwright():
    """One Playwright for the module: its sync API cannot be started a second time in a thread while
    the first is open (the module's browsers all launch from this one)."""
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def camera_browser(playwright, fake_camera):
    b = _launch(playwright, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={fake_camera}")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    """A data folder of the test's own (the camera writes into it): two labels of sample photos."""
    root = tmp_path / "data"
    for label in ("0", "1"):
        (root / label).mkdir(parents=True)
        for photo in sorted((samples.sign_language_digits() / label).iterdir())[:3]:
            shutil.copy(photo, root / label / photo.name)
    monkeypatch.setenv("CREATEML_WIDGETS_DATA_ROOT", str(root))
    return root


def _tab(page, tabs: str, title: str, shows: str | None = None) -> None:
    """Open a tab of the app; `shows`: a selector to wait for (the camera widgets are made on opening)."""
    page.locator(f"{tabs} .lm-TabBar-tab, {tabs} .p-TabBar-tab", has_text=title).first.click()
    if shows:
        page.wait_for_selector(shows, timeout=MINUTE)


def _switch_task(page, title: str, ready: str) -> None:
    """Switch the task and wait for the app rebuilt for it (`ready`: a selector only that task shows)."""
    page.locator(".cmlw-task-select button", has_text=title).click()
    page.wait_for_selector(ready, timeout=2 * MINUTE)
    page.wait_for_selector(".cmlw-picker-summary", timeout=2 * MINUTE)


def _start_camera(page, widget: str) -> None:
    page.click(f"{widget} .cmlw-camera-start")
    page.wait_for_selector(f"{widget}[data-state='on']", timeout=MINUTE)
    page.wait_for_function(f"() => document.querySelector('{widget} video').videoWidth === 640", timeout=MINUTE)


def _write_figures(key: str, value) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figures = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    figures[key] = value
    FIGURES_FILE.write_text(json.dumps(figures, indent=1))


def _snap_photos(page, label: str, count: int) -> None:
    cam = ".cmlw-camera-camera"
    page.fill(f"{cam} .cmlw-camera-label-input", label)
    page.dispatch_event(f"{cam} .cmlw-camera-label-input", "change")
    video = page.locator(f"{cam} video").element_handle()
    button = page.locator(f"{cam} .cmlw-camera-snap").element_handle()
    taken = 0
    while taken < count:
        page.wait_for_function(f"([v, m]) => eval(m)(v) === {COLOURS[label]!r}", arg=[video, MARKER_JS],
                               timeout=3 * SEGMENT_S * 1000, polling=50)
        before, after = page.evaluate(SNAP_JS, [video, button, MARKER_JS])
        assert before == after == COLOURS[label], (before, after)  # or the photo may show the other hand
        taken += 1
        page.wait_for_function(
            f"() => (document.querySelector('{cam} .cmlw-camera-count[data-label=\"{label}\"]') || {{}})"
            f".textContent === '{label}: {taken}'", timeout=MINUTE)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_record_two_labels_train_and_watch_it_answer_live(camera_browser, tmp_path, data_root):
    with open_dashboard(camera_browser, tmp_path / "cache", "camera") as visit:
        ui, page = visit.ui, visit.page
        _switch_task(page, "Hand Pose Classifier", ".cmlw-param-maximum_iterations input")
        page.wait_for_selector(".cmlw-picker-ready", timeout=2 * MINUTE)  # the data folder's two photo labels

        # 1. The camera tab beside folders and uploads; Start camera; Snap photos of two labels.
        _tab(page, ".cmlw-data-tabs", "Camera", ".cmlw-camera-camera .cmlw-camera-start")
        _start_camera(page, ".cmlw-camera-camera")
        ui.shot("camera-1-started", ".cmlw-section-data")
        for _digit, label, _colour in SEGMENTS:
            _snap_photos(page, label, PHOTOS_PER_LABEL)
        visit.mark("recorded")
        message = page.inner_text(".cmlw-camera-camera .cmlw-camera-message")
        assert message.startswith("saved uploads/one/one-") and message.endswith("kB)"), message
        for _digit, label, _colour in SEGMENTS:
            saved = sorted((data_root / "uploads" / label).glob("*.jpg"))
            assert len(saved) == PHOTOS_PER_LABEL, saved
        ui.check("recording photos with the camera")
        ui.shot("camera-2-recorded", ".cmlw-section-data")
        page.click(".cmlw-camera-camera .cmlw-camera-stop")

        # The picker opened the uploads folder: two labels, the counts, ready to train.
        _tab(page, ".cmlw-data-tabs", "Folders & uploads")
        page.wait_for_selector(".cmlw-picker-ready", timeout=MINUTE)
        assert page.input_value(".cmlw-picker-path input") == "uploads"
        rows_js = ("() => [...document.querySelectorAll('.cmlw-class-row')].map(r => r.querySelector("
                   "'.cmlw-class-label').textContent + ':' + r.querySelector('.cmlw-class-count').textContent)"
                   ".sort().join(' ')")
        expected = f"five:{PHOTOS_PER_LABEL} one:{PHOTOS_PER_LABEL}"
        try:  # the table (with its skeleton thumbnails) is drawn after the counts
            page.wait_for_function(f"() => ({rows_js})() === {expected!r}", timeout=MINUTE)
        except sync_api.TimeoutError:
            pytest.fail(f"the picker shows {page.evaluate(rows_js)!r}, not {expected!r}")
        ui.shot("camera-3-picker", ".cmlw-section-data")

        # 2. Train a hand pose classifier on them.
        page.fill(".cmlw-param-maximum_iterations input", "40")
        page.wait_for_timeout(500)
        page.click(".cmlw-train-button")
        page.wait_for_selector(".cmlw-training-progress .cmlw-state-done", timeout=4 * MINUTE)
        visit.mark("trained")
        ui.check("training on the recorded photos")

        # 3. Live: the label follows the hand the camera shows.
        _tab(page, ".cmlw-preview-tabs", "Live", ".cmlw-camera-live .cmlw-live-start")
        live = ".cmlw-camera-live"
        page.click(f"{live} .cmlw-live-start")
        page.wait_for_selector(f"{live}[data-state='on']", timeout=MINUTE)
        page.wait_for_function(f"() => document.querySelector('{live} .cmlw-live-label').dataset.label",
                               timeout=MINUTE)
        visit.mark("live")
        video = page.locator(f"{live} video").element_handle()
        caption = page.locator(f"{live} .cmlw-live-label").element_handle()
        watched_ms = 3 * 2 * SEGMENT_S * 1000 / 2  # three changes of hand
        seen = page.evaluate(WATCH_LIVE_JS, [video, caption, MARKER_JS, watched_ms])
        ui.shot("camera-4-live", ".cmlw-section-preview")
        stats = page.evaluate(f"() => {{ const s = document.querySelector('{live}').cmlwStats;"
                              " return {sent: s.sent, answers: s.answers, dropped: s.dropped, latencies: s.latencies}; }")
        meter = page.inner_text(f"{live} .cmlw-live-meter")
        page.click(f"{live} .cmlw-live-stop")
        ui.check("the live preview")

        # Each sample away from a change of hand (0.6 s either side) names the hand shown.
        changes = [seen[i][0] for i in range(1, len(seen)) if seen[i][1] != seen[i - 1][1]]
        steady = [(colour, label) for t, colour, label in seen
                  if colour in ("red", "blue") and all(abs(t - c) > 600 for c in changes)]
        answered = [(colour, label) for colour, label in steady if label]
        right = [1 for colour, label in answered if COLOURS.get(label) == colour]
        assert len(changes) >= 2, f"the fake camera did not change hands while watched: {seen}"
        assert len(answered) >= 0.8 * len(steady), f"too few answers: {len(answered)} of {len(steady)}"
        assert len(right) >= 0.9 * len(answered), f"{len(right)} of {len(answered)} live labels named the hand shown"
        assert {label for _c, label in answered} == {"five", "one"}

        # The round trip, measured in the browser (frames captured → answer drawn).
        latencies = stats["latencies"][5:]  # the first answers pay for MediaPipe's start
        assert len(latencies) >= 20, stats
        p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))]
        figures = {"answers": stats["answers"], "sent": stats["sent"], "dropped_while_busy": stats["dropped"],
                   "latency_ms_median": round(statistics.median(latencies), 1), "latency_ms_p95": round(p95, 1),
                   "fps_shown": float(meter.split(" fps")[0]), "meter": meter,
                   "live_labels_right": f"{len(right)} / {len(answered)}",
                   "targets": {"fps": ">= 10", "latency_ms_median": "< 150"}}
        figures["fps_from_latency"] = round(1000 / statistics.median(latencies), 1)
        _write_figures("hand_pose_live", figures)
        assert stats["sent"] == stats["answers"] or stats["sent"] == stats["answers"] + 1  # never more than one in flight
    _write_figures("hand_pose_live_peak_rss_mb", _peak(visit))


def _peak(visit) -> dict:
    from test_dashboard import RESULTS

    return RESULTS["peak_rss_mb"].get(visit.name, {})


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_record_a_clip_for_a_hand_action(camera_browser, tmp_path, data_root):
    from createml_widgets.features.video import probe_video, video_keypoints

    with open_dashboard(camera_browser, tmp_path / "cache", "camera_clip") as visit:
        ui, page = visit.ui, visit.page
        _switch_task(page, "Hand Action Classifier", ".cmlw-param-prediction_window_size input")
        _tab(page, ".cmlw-data-tabs", "Camera", ".cmlw-camera-camera .cmlw-camera-start")
        cam = ".cmlw-camera-camera"
        assert not page.is_visible(f"{cam} .cmlw-camera-snap")  # clips, not photos, for hand actions
        _start_camera(page, cam)
        page.fill(f"{cam} .cmlw-camera-seconds-input", "2")
        page.dispatch_event(f"{cam} .cmlw-camera-seconds-input", "change")
        infos = {}
        for label in ("hold-five", "hold-one"):  # two labels: one alone is not training data (the picker says so)
            page.fill(f"{cam} .cmlw-camera-label-input", label)
            page.dispatch_event(f"{cam} .cmlw-camera-label-input", "change")
            page.click(f"{cam} .cmlw-camera-record")
            page.wait_for_function(f"() => document.querySelector('{cam} .cmlw-camera-record').textContent"
                                   ".startsWith('Recording')", timeout=MINUTE)
            if label == "hold-five":
                ui.shot("camera-5-recording-clip", ".cmlw-section-data")
            page.wait_for_function(f"() => (document.querySelector('{cam} .cmlw-camera-count[data-label=\"{label}\"]')"
                                   f" || {{}}).textContent === '{label}: 1'", timeout=MINUTE)
            [clip] = (data_root / "uploads" / label).glob("*.mp4")
            infos[label] = info = probe_video(clip)
            assert info.fps == 30.0 and 1.6 <= info.duration <= 2.4 and (info.width, info.height) == (640, 480), info
            assert video_keypoints(clip, 30.0).hand_fraction > 0.8  # the recorded clip shows the hand
        visit.mark("recorded")
        ui.check("recording clips")
        ui.shot("camera-6-clips-recorded", ".cmlw-section-data")
        info = infos["hold-five"]
        _write_figures("hand_action_clip", {"duration_s": info.duration, "frames": info.frame_count})


@pytest.mark.timeout(300)
def test_a_refused_camera_says_so_and_the_app_works_on(playwright, tmp_path, data_root):
    """Chromium without the fake permission prompt: the page's camera request is refused (as a user
    pressing Block)."""
    browser = _launch(playwright, "--use-fake-device-for-media-stream")
    try:
        with open_dashboard(browser, tmp_path / "cache", "camera_refused") as visit:
            ui, page = visit.ui, visit.page
            page.context.clear_permissions()
            _tab(page, ".cmlw-data-tabs", "Camera", ".cmlw-camera-camera .cmlw-camera-start")
            page.click(".cmlw-camera-camera .cmlw-camera-start")
            problem = page.wait_for_selector(".cmlw-camera-camera .cmlw-camera-problem-denied", timeout=MINUTE)
            text = problem.inner_text()
            assert "Camera permission was refused" in text and "Start camera again" in text, text
            ui.shot("camera-7-refused", ".cmlw-section-data")
            # The live tab says the same; the rest of the app goes on: the picker still works.
            _tab(page, ".cmlw-preview-tabs", "Live", ".cmlw-camera-live .cmlw-live-start")
            page.click(".cmlw-camera-live .cmlw-live-start")
            page.wait_for_selector(".cmlw-camera-live .cmlw-camera-problem-denied", timeout=MINUTE)
            _tab(page, ".cmlw-data-tabs", "Folders & uploads")
            assert page.is_visible(".cmlw-picker-ready")
            page.click(".cmlw-picker-up")  # any widget still answers
            page.wait_for_selector(".cmlw-picker-ready", timeout=MINUTE)
            ui.check("a refused camera")
    finally:
        browser.close()


def test_the_fake_camera_file_is_real_hands(tmp_path):
    """The MJPEG the fake camera plays: 640x480 JPEG frames, MediaPipe finds the hand in them."""
    from PIL import Image

    from createml_widgets.features.hand_keypoints import HandKeypointDetector

    path = tmp_path / "hands.mjpeg"
    make_fake_camera_file(path, seconds=0.2)
    data = path.read_bytes()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8 and (i == 0 or data[i - 2:i] == b"\xff\xd9")]
    assert len(starts) == 12, len(starts)
    with HandKeypointDetector(video=False) as detector:
        for at in (starts[0], starts[6]):
            frame = np.asarray(Image.open(io.BytesIO(data[at:])).convert("RGB"))
            assert frame.shape == (480, 640, 3)
            assert detector.detect(frame) is not None
