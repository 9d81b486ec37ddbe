// The browser half of Camera and LivePreview (createml_widgets/widgets/camera.py): an anywidget ES module,
// no build step. The camera is opened only when the user presses "Start camera" (getUserMedia); photos,
// clips and live frames go to the kernel as binary messages (model.send(content, callbacks, buffers)).
// Live frames: one in flight at a time — while the kernel works on a frame, the camera's frames are
// dropped (counted), never queued; frames are downscaled (frame_max_side) and throttled (max_fps).

const PROBLEMS = {
  insecure: "The camera only works on a secure page. Open this page over https://, or at http://localhost " +
    "(or 127.0.0.1) on the machine that runs it — this page is %URL%.",
  unsupported: "This browser gives pages no camera (navigator.mediaDevices is missing). Use a current " +
    "Chrome, Edge, Firefox or Safari.",
  denied: "Camera permission was refused. Allow the camera for this site (the camera icon in the address " +
    "bar, or the browser's site settings), then press Start camera again.",
  "no-camera": "No camera was found. Connect a camera (or close the program that holds it), then press " +
    "Start camera again.",
  busy: "The camera is in use by another program or tab. Close it there, then press Start camera again.",
  error: "The camera could not be started: %DETAIL%",
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function classify(err) {
  const name = (err && err.name) || "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") return "denied";
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") return "no-camera";
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") return "busy";
  return "error";
}

function blobOf(canvas, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
}

function grab(video, canvas, maxSide) {
  const w = video.videoWidth, h = video.videoHeight;
  const s = Math.min(1, maxSide / Math.max(w, h));
  canvas.width = Math.max(1, Math.round(w * s));
  canvas.height = Math.max(1, Math.round(h * s));
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function median(values) {
  if (!values.length) return null;
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor((v.length - 1) / 2)];
}

function render({ model, el: root }) {
  const kind = model.get("_kind");
  const box = el("div", `cmlw-camera cmlw-camera-${kind}`);
  root.appendChild(box);
  const stats = { sent: 0, answers: 0, dropped: 0, latencies: [], answerTimes: [] };
  box.cmlwStats = stats; // read by the browser tests

  const controls = el("div", "cmlw-camera-controls");
  const startBtn = el("button", "cmlw-camera-start jupyter-button", "Start camera");
  const stopCamBtn = el("button", "cmlw-camera-stop jupyter-button", "Stop camera");
  controls.append(startBtn, stopCamBtn);
  const problem = el("div", "cmlw-camera-problem");
  const stage = el("div", "cmlw-camera-stage");
  const video = el("video", "cmlw-camera-video");
  video.muted = true; video.playsInline = true; video.autoplay = true;
  const overlay = el("canvas", "cmlw-camera-overlay");
  const caption = el("div", "cmlw-live-label");
  stage.append(video, overlay, caption);
  const status = el("div", "cmlw-camera-status");
  box.append(controls, problem, stage, status);
  stage.style.display = "none";
  stopCamBtn.disabled = true;

  let stream = null;
  const grabCanvas = document.createElement("canvas");

  function setState(state, detail) {
    model.set("camera_state", state);
    model.set("camera_error", detail || "");
    model.save_changes();
    box.dataset.state = state;
    if (PROBLEMS[state]) {
      problem.textContent = PROBLEMS[state].replace("%URL%", location.href).replace("%DETAIL%", detail || "");
      problem.className = `cmlw-camera-problem cmlw-camera-problem-${state}`;
    } else {
      problem.textContent = "";
      problem.className = "cmlw-camera-problem";
    }
  }

  function mirrored() { return !!model.get("mirror"); }
  function applyMirror() {
    const t = mirrored() ? "scaleX(-1)" : "none";
    video.style.transform = t; overlay.style.transform = t;
  }
  applyMirror();
  model.on("change:mirror", applyMirror);

  async function startCamera() {
    if (stream) return true;
    if (!window.isSecureContext) { setState("insecure"); return false; }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { setState("unsupported"); return false; }
    setState("starting");
    try {
      stream = await navigator.mediaDevices.getUserMedia(
        { video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (err) {
      setState(classify(err), `${err.name || "Error"}: ${err.message || err}`);
      return false;
    }
    video.srcObject = stream;
    await video.play().catch(() => {});
    if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
    stage.style.display = "";
    startBtn.disabled = true; stopCamBtn.disabled = false;
    setState("on");
    sizeOverlay();
    onCameraStarted();
    return true;
  }

  function stopCamera() {
    onCameraStopping();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
    stage.style.display = "none";
    startBtn.disabled = false; stopCamBtn.disabled = true;
    setState("off");
  }

  function sizeOverlay() {
    overlay.width = video.videoWidth || 640;
    overlay.height = video.videoHeight || 480;
  }

  startBtn.addEventListener("click", () => startCamera());
  stopCamBtn.addEventListener("click", () => stopCamera());

  // ---------------------------------------------------------------------------------------------
  // Camera: Snap (a photo) and Record (a clip) into the data folder under the chosen label.
  let onCameraStarted = () => {}, onCameraStopping = () => {};
  if (kind === "camera") {
    const labelBox = el("label", "cmlw-camera-label", "Label ");
    const labelInput = el("input", "cmlw-camera-label-input");
    labelInput.type = "text"; labelInput.placeholder = "e.g. thumbs-up";
    labelInput.value = model.get("label");
    labelBox.appendChild(labelInput);
    const secondsBox = el("label", "cmlw-camera-seconds", " Clip ");
    const secondsInput = el("input", "cmlw-camera-seconds-input");
    secondsInput.type = "number"; secondsInput.min = "0.5"; secondsInput.max = "30"; secondsInput.step = "0.5";
    secondsInput.value = String(model.get("clip_seconds"));
    secondsBox.append(secondsInput, document.createTextNode(" s"));
    const snapBtn = el("button", "cmlw-camera-snap jupyter-button", "Snap");
    const recordBtn = el("button", "cmlw-camera-record jupyter-button", "Record");
    const video_task = model.get("media") === "video";
    snapBtn.style.display = video_task ? "none" : "";
    recordBtn.style.display = video_task ? "" : "none";
    secondsBox.style.display = video_task ? "" : "none";
    snapBtn.disabled = recordBtn.disabled = true;
    controls.append(labelBox, secondsBox, snapBtn, recordBtn);
    const counts = el("div", "cmlw-camera-counts");
    const message = el("div", "cmlw-camera-message");
    box.append(message, counts);

    labelInput.addEventListener("change", () => { model.set("label", labelInput.value); model.save_changes(); });
    labelInput.addEventListener("input", () => { model.set("label", labelInput.value); model.save_changes(); });
    secondsInput.addEventListener("change", () => {
      const v = parseFloat(secondsInput.value);
      if (isFinite(v)) { model.set("clip_seconds", v); model.save_changes(); }
    });
    model.on("change:label", () => { if (labelInput.value !== model.get("label")) labelInput.value = model.get("label"); });
    model.on("change:clip_seconds", () => { secondsInput.value = String(model.get("clip_seconds")); });

    function showCounts() {
      const c = model.get("counts") || {};
      const names = Object.keys(c).sort();
      counts.textContent = "";
      if (!names.length) return;
      counts.appendChild(el("span", "cmlw-camera-counts-title", `${model.get("media")}s recorded: `));
      for (const name of names) {
        const chip = el("span", "cmlw-camera-count");
        chip.dataset.label = name;
        chip.textContent = `${name}: ${c[name]}`;
        counts.appendChild(chip);
      }
    }
    function showMessage() {
      message.textContent = model.get("message");
      message.className = `cmlw-camera-message cmlw-camera-${model.get("message_level") || "info"}`;
    }
    model.on("change:counts", showCounts);
    model.on("change:message", showMessage);
    model.on("change:message_level", showMessage);
    showCounts(); showMessage();

    onCameraStarted = () => { snapBtn.disabled = recordBtn.disabled = false; };
    onCameraStopping = () => { snapBtn.disabled = recordBtn.disabled = true; };

    function failed(err) {
      message.textContent = `not saved: ${err && err.message ? err.message : err}`;
      message.className = "cmlw-camera-message cmlw-camera-failed";
    }
    snapBtn.addEventListener("click", () => {
      if (!stream) return;
      const canvas = grab(video, document.createElement("canvas"), model.get("photo_max_side"));
      const label = labelInput.value;
      blobOf(canvas, 0.92).then((blob) => blob.arrayBuffer()).then((buffer) => {
        model.send({ type: "photo", label, width: canvas.width, height: canvas.height }, undefined, [buffer]);
      }).catch(failed);
    });

    // Record: JPEG frames at clip_fps with their capture times, sent together when the clip is done;
    // the kernel resamples them by time to a constant-rate MP4 (MediaRecorder's WebM has no frame rate
    // OpenCV can use, and may hold only a few frames of a still scene).
    recordBtn.addEventListener("click", () => {
      if (!stream) return;
      const seconds = Math.max(0.5, Math.min(30, parseFloat(secondsInput.value) || model.get("clip_seconds")));
      const canvas = document.createElement("canvas");
      const pending = [];
      recordBtn.disabled = snapBtn.disabled = true;
      const began = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        const left = seconds - (now - began) / 1000;
        recordBtn.textContent = left > 0 ? `Recording… ${left.toFixed(1)} s` : "Saving…";
        if (left <= 0) {
          clearInterval(timer);
          Promise.all(pending).then((frames) => {
            frames.sort((a, b) => a[0] - b[0]);
            recordBtn.disabled = snapBtn.disabled = !stream;
            recordBtn.textContent = "Record";
            model.send({ type: "clip", label: labelInput.value, seconds, times: frames.map((f) => f[0]) },
              undefined, frames.map((f) => f[1]));
          });
          return;
        }
        grab(video, canvas, model.get("photo_max_side"));
        pending.push(blobOf(canvas, 0.85).then((b) => b.arrayBuffer()).then((buf) => [now / 1000, buf]));
      }, 1000 / Math.max(1, model.get("clip_fps")));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // LivePreview: frames to the kernel, answers drawn over the stream.
  if (kind === "live") {
    const liveStart = el("button", "cmlw-live-start jupyter-button", "Start");
    const liveStop = el("button", "cmlw-live-stop jupyter-button", "Stop");
    liveStop.disabled = true;
    controls.append(liveStart, liveStop);
    const windowBar = el("div", "cmlw-live-window");
    const windowFill = el("div", "cmlw-live-window-fill");
    const windowText = el("span", "cmlw-live-window-text");
    windowBar.append(windowFill, windowText);
    windowBar.style.display = "none";
    const meter = el("div", "cmlw-live-meter");
    box.append(windowBar, meter);

    let running = false, inflight = null, nextId = 1, lastSent = 0, loop = null;
    const edges = model.get("_edges") || [];

    function drawAnswer(answer) {
      const ctx = overlay.getContext("2d");
      ctx.clearRect(0, 0, overlay.width, overlay.height);
      if (answer.error) {
        caption.textContent = answer.error;
        caption.className = "cmlw-live-label cmlw-live-error-text";
        return;
      }
      caption.className = "cmlw-live-label";
      caption.dataset.label = answer.label == null ? "" : answer.label;
      caption.textContent = answer.label == null
        ? (answer.window_size && answer.window_fill < 1 ? "filling the window…" : (answer.note || "no hand"))
        : `${answer.label} ${Math.round(100 * answer.confidence)}%`;
      const kp = answer.keypoints;
      if (kp) {
        const W = overlay.width, H = overlay.height;
        const px = (i) => kp[0][i] * (W - 1), py = (i) => (1 - kp[1][i]) * (H - 1);
        ctx.lineWidth = Math.max(2, W / 160);
        ctx.strokeStyle = "rgb(255,64,32)";
        ctx.beginPath();
        for (const [i, j] of edges) { ctx.moveTo(px(i), py(i)); ctx.lineTo(px(j), py(j)); }
        ctx.stroke();
        ctx.fillStyle = "white";
        for (let i = 0; i < kp[0].length; i++) {
          ctx.beginPath(); ctx.arc(px(i), py(i), ctx.lineWidth * 1.4, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
        }
      }
      if (answer.window_size) {
        windowBar.style.display = "";
        windowFill.style.width = `${Math.round(100 * answer.window_fill)}%`;
        windowText.textContent = `window ${answer.window_frames} / ${answer.window_size} frames` +
          (answer.label != null ? ` · ${answer.label}` : "");
      }
    }

    function showMeter() {
      const now = performance.now();
      stats.answerTimes = stats.answerTimes.filter((t) => now - t < 2000);
      const fps = stats.answerTimes.length > 1
        ? (stats.answerTimes.length - 1) / ((stats.answerTimes[stats.answerTimes.length - 1] - stats.answerTimes[0]) / 1000)
        : 0;
      const recent = stats.latencies.slice(-30);
      const lat = median(recent);
      meter.textContent = `${fps.toFixed(1)} fps · ${lat == null ? "–" : Math.round(lat)} ms latency · ` +
        `${stats.dropped} frames dropped while the kernel was busy`;
      meter.dataset.fps = fps.toFixed(2);
      return { fps, lat };
    }

    model.on("msg:custom", (msg) => {
      if (!msg || msg.type !== "result") return;
      if (!inflight || msg.id !== inflight.id) return; // a stale answer (stopped meanwhile)
      const sent = inflight;
      drawAnswer(msg);
      requestAnimationFrame(() => {
        const drawn = performance.now();
        stats.answers += 1;
        stats.latencies.push(drawn - sent.captured);
        if (stats.latencies.length > 5000) stats.latencies.shift();
        stats.answerTimes.push(drawn);
        inflight = null;
        const { fps, lat } = showMeter();
        if (stats.answers % 10 === 0) {
          model.set("fps", Math.round(fps * 10) / 10);
          model.set("latency_ms", lat == null ? 0 : Math.round(lat));
          model.save_changes();
        }
      });
    });

    async function step() {
      if (!running) return;
      const now = performance.now();
      if (inflight) {
        if (now - inflight.captured > 15000) { // the kernel died or hangs: say so, try again
          caption.textContent = "the kernel is not answering";
          inflight = null;
        } else {
          stats.dropped += 1; // a camera frame the kernel is too busy for: dropped, not queued
        }
      } else if (now - lastSent >= 1000 / Math.max(0.5, model.get("max_fps")) && video.videoWidth) {
        lastSent = now;
        const id = nextId++;
        inflight = { id, captured: now };
        grab(video, grabCanvas, model.get("frame_max_side"));
        const blob = await blobOf(grabCanvas, 0.8);
        const buffer = await blob.arrayBuffer();
        if (!running || !inflight || inflight.id !== id) return;
        stats.sent += 1;
        model.send({ type: "frame", id, t: now / 1000 }, undefined, [buffer]);
      }
      loop = requestAnimationFrame(step);
    }

    function startLive() {
      if (running || !stream) return;
      running = true;
      inflight = null;
      liveStart.disabled = true; liveStop.disabled = false;
      model.send({ type: "start" });
      model.set("running", true); model.save_changes();
      loop = requestAnimationFrame(step);
    }
    function stopLive() {
      running = false;
      inflight = null;
      if (loop) cancelAnimationFrame(loop);
      liveStart.disabled = false; liveStop.disabled = true;
      model.set("running", false); model.save_changes();
    }
    onCameraStarted = () => { if (model.get("autostart")) startLive(); };
    onCameraStopping = () => stopLive();
    liveStart.addEventListener("click", async () => { if (await startCamera()) startLive(); });
    liveStop.addEventListener("click", stopLive);
  }

  return () => { // the view is removed: free the camera
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
  };
}

export default { render };
