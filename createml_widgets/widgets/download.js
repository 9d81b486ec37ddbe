// FileDownload (download.py): a download link whose file stays in the kernel until it is clicked.
// The click asks the kernel for the bytes (a custom message); they come back as one binary buffer and are
// saved through a Blob URL, so the file is never part of the widget's state (nor of a saved notebook).
function render({ model, el }) {
  el.classList.add("cmlw-download-link");
  let pending = false;

  function draw() {
    el.replaceChildren();
    const name = model.get("filename");
    if (!name) {
      const note = document.createElement("span");
      note.innerHTML = model.get("value"); // the step's own message (writing…, failed, too large), escaped in Python
      el.append(note);
      return;
    }
    const link = document.createElement("a");
    link.className = "cmlw-download";
    link.href = "#";
    link.setAttribute("download", name);
    link.dataset.sha256 = model.get("sha256");
    link.dataset.size = String(model.get("size"));
    link.textContent = "\u2b07 Download " + name;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      if (pending) return;
      pending = true;
      link.classList.add("cmlw-download-pending");
      model.send({ type: "download", sha256: model.get("sha256") });
    });
    const size = document.createElement("span");
    size.className = "cmlw-download-size";
    size.style.color = "#6e6e73";
    size.textContent = " " + (model.get("size") / 1e6).toFixed(1) + " MB";
    el.append(link, size);
  }

  model.on("msg:custom", (msg, buffers) => {
    if (!msg || msg.type !== "file") return;
    pending = false;
    const link = el.querySelector("a.cmlw-download");
    if (link) link.classList.remove("cmlw-download-pending");
    if (msg.error || !buffers || !buffers.length) {
      const note = document.createElement("div");
      note.className = "cmlw-error";
      note.style.color = "#c62828";
      note.textContent = "Download failed: " + (msg.error || "no data came back");
      el.append(note);
      return;
    }
    const buf = buffers[0];
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    const save = document.createElement("a");
    save.href = url;
    save.download = msg.name;
    save.style.display = "none";
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });
  model.on("change:filename change:value change:sha256 change:size", draw);
  draw();
}

export default { render };
