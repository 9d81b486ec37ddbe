// The browser half of LineChart and Heatmap (createml_widgets/widgets/charts.py): an anywidget ES module,
// no build step, a few kilobytes in place of plotly.js. Both draw SVG from their traitlets.
// LineChart: `points` holds the series as of the kernel's last full sync; new points arrive as small
// "append" messages ({start: {key: n}, points: {key: [[x, y], ...]}}), added to the model's own `points`
// (so every view, and a notebook saved from the page, has them). A batch that does not start where the
// series ends (a view made part way through a run) asks the kernel to resend the whole series once.
// Heatmap: a click on a cell sends {type: "click", true: row label, predicted: column label}.

const SVG = "http://www.w3.org/2000/svg";
const isValue = (v) => typeof v === "number" && isFinite(v); // a NaN travels as null: not drawn

function svg(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function div(cls, text, parent) {
  const e = document.createElement("div");
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

function ticks(lo, hi, count) {
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function fmt(value, percent, digits) {
  if (!isValue(value)) return "–";
  return percent ? (value * 100).toFixed(digits === undefined ? 1 : digits) + "%" : (+value).toFixed(digits === undefined ? 4 : digits);
}

// -- LineChart --------------------------------------------------------------------------------------
const W = 370, H = 270, M = { l: 52, r: 12, t: 28, b: 40 };
const MAX_MARKERS = 120; // more points than this a series: the line alone

function appendBatch(model, msg) {
  const current = model.get("points") || {};
  const next = { ...current };
  for (const [key, pts] of Object.entries(msg.points || {})) {
    const have = current[key] || [];
    const start = (msg.start || {})[key] || 0;
    if (have.length < start) return false; // a gap: this model missed a batch
    next[key] = have.slice(0, start).concat(pts);
  }
  model.set("points", next);
  return true;
}

function drawPanel(host, model, panel, index, tip) {
  const series = (model.get("series") || []).filter((s) => (s.panel || 0) === index);
  const points = model.get("points") || {};
  const box = div("cmlw-chart-panel", undefined, host);
  box.dataset.panel = String(index);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "cmlw-chart-svg", role: "img",
    "aria-label": panel.title || "" }, box);
  svg("text", { x: M.l, y: 16, class: "cmlw-chart-title" }, root).textContent = panel.title || "";
  const pw = W - M.l - M.r, ph = H - M.t - M.b;
  svg("rect", { x: M.l, y: M.t, width: pw, height: ph, class: "cmlw-chart-plot" }, root);
  const all = series.flatMap((s) => points[s.key] || []);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]).filter(isValue);
  const x0 = 0, x1 = Math.max(1, ...xs);
  const y0 = panel.min !== undefined && panel.min !== null ? panel.min : Math.min(0, ...ys);
  let y1 = panel.max !== undefined && panel.max !== null ? panel.max : Math.max(...ys, 0) * 1.05;
  if (!(y1 > y0)) y1 = y0 + 1;
  const X = (v) => M.l + (pw * (v - x0)) / (x1 - x0);
  const Y = (v) => M.t + ph * (1 - (Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0));
  const grid = svg("g", { class: "cmlw-chart-grid" }, root);
  for (const t of ticks(y0, y1, 5)) {
    svg("line", { x1: M.l, x2: M.l + pw, y1: Y(t), y2: Y(t) }, grid);
    svg("text", { x: M.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "cmlw-chart-ytick" }, grid).textContent =
      panel.percent ? Math.round(t * 100) + "%" : +t.toPrecision(3);
  }
  for (const t of ticks(x0, x1, 6).filter((t) => Number.isInteger(t))) {
    svg("text", { x: X(t), y: M.t + ph + 16, "text-anchor": "middle", class: "cmlw-chart-xtick" }, grid).textContent = t;
  }
  svg("text", { x: M.l + pw / 2, y: H - 6, "text-anchor": "middle", class: "cmlw-chart-axis-title" }, root)
    .textContent = model.get("x_title") || "";
  for (const s of series) {
    const pts = (points[s.key] || []).filter((p) => isValue(p[1]));
    const g = svg("g", { class: "cmlw-chart-series", "data-key": s.key }, root);
    const line = svg("polyline", { class: "cmlw-chart-line", "data-key": s.key, fill: "none", stroke: s.color || "#0071e3",
      "stroke-width": 1.8, points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }, g);
    if (s.dash) line.setAttribute("stroke-dasharray", "4 3");
    if (pts.length <= MAX_MARKERS) {
      for (const p of pts) svg("circle", { class: "cmlw-chart-point", cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1),
        r: 2.6, fill: s.color || "#0071e3" }, g);
    }
  }
  // Hover: the iteration nearest the pointer, a guide line, and each series' value there.
  const guide = svg("line", { class: "cmlw-chart-guide", y1: M.t, y2: M.t + ph, visibility: "hidden" }, root);
  const hit = svg("rect", { x: M.l, y: M.t, width: pw, height: ph, fill: "transparent", class: "cmlw-chart-hit" }, root);
  const iterations = [...new Set(xs)].sort((a, b) => a - b);
  hit.addEventListener("mousemove", (ev) => {
    if (!iterations.length) return;
    const r = root.getBoundingClientRect();
    const at = x0 + ((((ev.clientX - r.left) * W) / r.width - M.l) / pw) * (x1 - x0);
    const it = iterations.reduce((a, b) => (Math.abs(b - at) < Math.abs(a - at) ? b : a));
    guide.setAttribute("x1", X(it)); guide.setAttribute("x2", X(it)); guide.setAttribute("visibility", "visible");
    tip.textContent = "";
    div("cmlw-chart-tip-head", `${model.get("x_title") || "x"} ${it}`, tip);
    for (const s of series) {
      const p = (points[s.key] || []).find((q) => q[0] === it);
      if (p) div("cmlw-chart-tip-row", `${s.name}: ${fmt(p[1], panel.percent)}`, tip).style.color = s.color || "";
    }
    // Kept inside the chart (its box scrolls, it does not grow): left of the pointer near the right edge.
    tip.style.display = "block";
    const hr = tip.parentElement.getBoundingClientRect();
    const x = ev.clientX - hr.left, y = ev.clientY - hr.top;
    tip.style.left = `${Math.max(0, x + 12 + tip.offsetWidth > hr.width ? x - 12 - tip.offsetWidth : x + 12)}px`;
    tip.style.top = `${Math.max(0, y + 12 + tip.offsetHeight > hr.height ? y - 12 - tip.offsetHeight : y + 12)}px`;
  });
  hit.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); tip.style.display = "none"; });
}

function renderLineChart(model, el) {
  el.classList.add("cmlw-chart");
  const draw = () => {
    el.textContent = "";
    const panels = div("cmlw-chart-panels", undefined, el);
    const tip = div("cmlw-chart-tip", undefined, el);
    tip.style.display = "none";
    (model.get("panels") || [{}]).forEach((p, i) => drawPanel(panels, model, p, i, tip));
    const legend = div("cmlw-chart-legend", undefined, el);
    for (const s of model.get("series") || []) {
      const item = div("cmlw-chart-legend-item", undefined, legend);
      const mark = document.createElement("span");
      mark.className = "cmlw-chart-legend-mark";
      mark.style.borderTop = `2px ${s.dash ? "dotted" : "solid"} ${s.color || "#0071e3"}`;
      item.appendChild(mark);
      item.appendChild(document.createTextNode(s.name || s.key));
    }
  };
  let pending = 0;
  const later = () => { if (!pending) pending = requestAnimationFrame(() => { pending = 0; draw(); }); };
  draw();
  model.on("change:points", later);
  model.on("change:series", later);
  model.on("change:panels", later);
  return () => {
    if (pending) cancelAnimationFrame(pending);
    model.off("change:points", later);
    model.off("change:series", later);
    model.off("change:panels", later);
  };
}

// -- Heatmap ----------------------------------------------------------------------------------------
function mix(a, b, t) {
  const pa = a.match(/\w\w/g).map((h) => parseInt(h, 16)), pb = b.match(/\w\w/g).map((h) => parseInt(h, 16));
  return "#" + pa.map((v, i) => Math.round(v + (pb[i] - v) * t).toString(16).padStart(2, "0")).join("");
}

function renderHeatmap(model, el) {
  el.classList.add("cmlw-heatmap");
  const draw = () => {
    el.textContent = "";
    const xs = model.get("x") || [], ys = model.get("y") || [], z = model.get("z") || [];
    const selected = model.get("selected") || [];
    const n = Math.max(xs.length, ys.length, 1);
    const size = Math.max(320, Math.min(620, 70 + 42 * n));
    const m = { l: 86, r: 10, t: 14, b: 66 };
    const cw = (size - m.l - m.r) / Math.max(xs.length, 1), ch = (size - m.t - m.b) / Math.max(ys.length, 1);
    const root = svg("svg", { viewBox: `0 0 ${size} ${size}`, width: size, class: "cmlw-heatmap-svg", role: "img",
      "aria-label": "confusion matrix" }, el);
    const top = Math.max(1, ...z.flat());
    ys.forEach((t, i) => {
      xs.forEach((p, j) => {
        const v = (z[i] || [])[j] || 0;
        const x = m.l + j * cw, y = m.t + i * ch;
        const cell = svg("rect", { x: x + 0.5, y: y + 0.5, width: Math.max(cw - 1, 1), height: Math.max(ch - 1, 1),
          class: "cmlw-heatmap-cell", fill: v ? mix("d6e6fa", "0b5cad", v / top) : "#f5f7fb",
          "data-true": t, "data-predicted": p, "data-count": v }, root);
        if (selected[0] === t && selected[1] === p) cell.classList.add("cmlw-heatmap-selected");
        svg("title", {}, cell).textContent = `true ${t} · predicted ${p}\n${v} example${v === 1 ? "" : "s"}`;
        cell.addEventListener("click", () => model.send({ type: "click", true: t, predicted: p }));
        if (v) {
          const label = svg("text", { x: x + cw / 2, y: y + ch / 2 + 4, "text-anchor": "middle",
            class: "cmlw-heatmap-count", "pointer-events": "none" }, root);
          label.textContent = String(v);
          if (v / top > 0.55) label.classList.add("cmlw-heatmap-count-dark");
        }
      });
    });
    xs.forEach((p, j) => {
      svg("text", { x: m.l + (j + 0.5) * cw, y: size - m.b + 16, "text-anchor": "middle",
        class: "cmlw-heatmap-xtick" }, root).textContent = p;
    });
    ys.forEach((t, i) => {
      svg("text", { x: m.l - 8, y: m.t + (i + 0.5) * ch + 4, "text-anchor": "end",
        class: "cmlw-heatmap-ytick" }, root).textContent = t;
    });
    svg("text", { x: m.l + (size - m.l - m.r) / 2, y: size - 12, "text-anchor": "middle",
      class: "cmlw-heatmap-axis-title" }, root).textContent = model.get("x_title") || "";
    const yt = svg("text", { x: 14, y: m.t + (size - m.t - m.b) / 2, "text-anchor": "middle",
      class: "cmlw-heatmap-axis-title", transform: `rotate(-90 14 ${m.t + (size - m.t - m.b) / 2})` }, root);
    yt.textContent = model.get("y_title") || "";
  };
  draw();
  const names = ["change:x", "change:y", "change:z", "change:selected"];
  for (const e of names) model.on(e, draw);
  return () => { for (const e of names) model.off(e, draw); };
}

export default {
  initialize({ model }) {
    if (model.get("_kind") !== "line") return;
    model.on("msg:custom", (msg) => {
      if (msg && msg.type === "append" && !appendBatch(model, msg)) model.send({ type: "resend" });
    });
  },
  render({ model, el }) {
    return model.get("_kind") === "line" ? renderLineChart(model, el) : renderHeatmap(model, el);
  },
};
