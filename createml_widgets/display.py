"""The HTML (and text) views behind every `_repr_html_`: self-contained, no scripts, no external assets.

They render in a notebook without a kernel (nbviewer, GitHub, exported HTML): collapsible
<details> sections and inline styles only.
"""
from __future__ import annotations

import base64
import enum
import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from .metrics import MLClassifierMetrics
    from .session import MLTrainingSession
    from .tasks._base import ClassifierTask

_STYLE = (
    "<style>.cmlw{font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;"
    "font-size:13px;color:#1d1d1f;max-width:980px}"
    ".cmlw summary{cursor:pointer;font-weight:600;margin:6px 0}"
    ".cmlw table{border-collapse:collapse;margin:4px 0 8px 0}"
    ".cmlw td,.cmlw th{border:1px solid #d2d2d7;padding:3px 7px;text-align:right}"
    ".cmlw th{background:#f5f5f7}.cmlw .k{text-align:left;color:#6e6e73}"
    ".cmlw .title{font-size:15px;font-weight:700}.cmlw .warn{color:#b25000}"
    ".cmlw .badge{display:inline-block;background:#0071e3;color:#fff;border-radius:9px;padding:1px 8px;"
    "margin-left:6px;font-size:12px}</style>"
)


def esc(x: Any) -> str:
    """`str(x)` escaped for HTML."""
    return html.escape(str(x))


def _kv_table(rows) -> str:
    body = "".join(f"<tr><td class='k'>{esc(k)}</td><td style='text-align:left'>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(x, pct=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.1%}" if pct else (f"{x:.3f}" if isinstance(x, float) else str(x))


def confusion_table_html(metrics: MLClassifierMetrics) -> str:
    """The confusion matrix as an HTML table (rows: true label, columns: predicted)."""
    m = metrics.confusion_matrix
    if m.empty:
        return "<p>no examples</p>"
    peak = max(1, int(m.values.max()))
    head = "<tr><th>True\\Pred</th>" + "".join(f"<th>{esc(c)}</th>" for c in m.columns) + "</tr>"
    rows = []
    for label, row in m.iterrows():
        cells = []
        for col, n in row.items():
            alpha = n / peak
            color = f"rgba(0,113,227,{alpha:.2f})" if col == label else f"rgba(255,59,48,{alpha:.2f})"
            fg = "#fff" if alpha > 0.55 else "#1d1d1f"
            cells.append(f"<td style='background:{color};color:{fg}'>{n if n else ''}</td>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def precision_recall_html(metrics: MLClassifierMetrics) -> str:
    """Precision and recall of each label as an HTML table."""
    pr = metrics.precision_recall
    head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in pr.columns) + "</tr>"
    rows = "".join(
        "<tr>" + f"<td class='k'>{esc(r['Class'])}</td><td>{r['Item Count']}</td>"
        + "".join(f"<td>{_fmt(r[c], pct=True)}</td>" for c in ("Precision", "Recall", "F1")) + "</tr>"
        for _, r in pr.iterrows())
    return f"<table>{head}{rows}</table>"


def skipped_html(skipped: Sequence[dict], title: str = "Skipped files") -> str:
    """A foldable list of the files left out and why ("" for none)."""
    if not skipped:
        return ""
    rows = "".join(f"<tr><td class='k'>{esc(s.get('path'))}</td><td style='text-align:left'>{esc(s.get('reason'))}</td></tr>"
                   for s in skipped[:200])
    more = f"<p>… and {len(skipped) - 200} more</p>" if len(skipped) > 200 else ""
    return (f"<details><summary class='warn'>{esc(title)} ({len(skipped)})</summary>"
            f"<table>{rows}</table>{more}</details>")


def metrics_body(metrics: MLClassifierMetrics, open_: bool = True) -> str:
    """The accuracy, the confusion matrix and per-label precision and recall of one evaluation, as HTML."""
    if not metrics.is_valid:
        return f"<p class='warn'>Metrics unavailable: {esc(metrics.error)}</p>" + skipped_html(metrics.skipped)
    return (f"<p>Accuracy <b>{metrics.accuracy:.1%}</b> · error {metrics.classification_error:.1%} · "
            f"{metrics.count} example{'s' if metrics.count != 1 else ''}</p>"
            f"<details{' open' if open_ else ''}><summary>Confusion matrix</summary>{confusion_table_html(metrics)}</details>"
            f"<details><summary>Precision / recall</summary>{precision_recall_html(metrics)}</details>"
            + skipped_html(metrics.skipped))


def metrics_html(metrics: MLClassifierMetrics) -> str:
    """`metrics_body` in the package's style: what an MLClassifierMetrics shows in a notebook."""
    return f"{_STYLE}<div class='cmlw'><div class='title'>MLClassifierMetrics</div>{metrics_body(metrics)}</div>"


def _parameter_rows(params) -> list[tuple[str, str]]:
    rows = []
    for name, value in vars(params).items():
        if isinstance(value, (int, float, str)) or value is None:
            rows.append((name, value))
        elif isinstance(value, enum.Flag):
            names = [f.name for f in type(value) if f in value] if value.value else []
            rows.append((name, "[" + ", ".join(n.lower() for n in names) + "]"))
        else:
            rows.append((name, str(value)))
    return rows


def image_to_data_uri(image: Image.Image, max_side: int = 160) -> str:
    """`image` shrunk to at most `max_side` pixels, as a PNG data: URI for an <img>."""
    img = image.copy()
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_gallery_html(title: str, figures: Sequence[tuple[str, Image.Image]], width: int) -> str:
    """A foldable row of pictures with captions: `figures` is [(caption, PIL image)]; "" for none."""
    cells = [f"<figure style='display:inline-block;margin:4px;text-align:center'>"
             f"<img src='{image_to_data_uri(picture, width)}' width='{width}'/>"
             f"<figcaption>{esc(caption)}</figcaption></figure>" for caption, picture in figures]
    if not cells:
        return ""
    return f"<details open><summary>{esc(title)}</summary>{''.join(cells)}</details>"


def history_svg(history: Sequence[dict], width: int = 360, height: int = 120) -> str:
    """The training curves (loss, and accuracy in %) as an inline SVG: no script, so a saved notebook
    and GitHub show it."""
    rows = [h for h in history or [] if "iteration" in h]
    if len(rows) < 2:
        return ""
    curves = [("loss", "training loss", "#0071e3", ""), ("validation_loss", "validation loss", "#ff9500", "4 3"),
              ("accuracy", "training accuracy", "#0071e3", ""),
              ("validation_accuracy", "validation accuracy", "#ff9500", "4 3")]
    x0, x1 = rows[0]["iteration"], rows[-1]["iteration"]
    pad, half = 28, (width - 3 * 28) // 2
    parts = []
    for col, kind in enumerate(("loss", "accuracy")):
        left = pad + col * (half + pad)
        keys = [c for c in curves if ("accuracy" in c[0]) == (kind == "accuracy") and any(c[0] in r for r in rows)]
        values = [r[k] for k, *_ in keys for r in rows if k in r]
        if not values:
            continue
        top = 1.0 if kind == "accuracy" else max(max(values), 1e-9)
        parts.append(f"<text x='{left}' y='12' font-size='11' fill='#1d1d1f'>{kind.capitalize()}</text>"
                     f"<rect x='{left}' y='18' width='{half}' height='{height - 34}' fill='#fafafa' stroke='#ddd'/>")
        for key, name, color, dash in keys:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            path = " ".join(f"{left + half * (it - x0) / max(x1 - x0, 1):.1f},"
                            f"{18 + (height - 34) * (1 - min(v / top, 1.0)):.1f}" for it, v in pts)
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' stroke-dasharray='{dash}' "
                         f"points='{path}'><title>{esc(name)}</title></polyline>")
        parts.append(f"<text x='{left}' y='{height - 4}' font-size='10' fill='#6e6e73'>iteration {x0}</text>"
                     f"<text x='{left + half}' y='{height - 4}' font-size='10' fill='#6e6e73' "
                     f"text-anchor='end'>{x1}</text>")
    legend = " · ".join(f"<span style='color:{c}'>{'┄' if d else '—'} {esc(n)}</span>" for k, n, c, d in curves[:2])
    return (f"<svg class='cmlw-history' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"xmlns='http://www.w3.org/2000/svg' role='img' aria-label='training curves'>{''.join(parts)}</svg>"
            f"<div style='font-size:11px'>{legend}</div>")


def mistakes_html(metrics: MLClassifierMetrics, limit: int = 8, size: int = 72) -> str:
    """The examples the model got wrong, as small pictures captioned "true → predicted (confidence)"."""
    if metrics is None or not metrics.is_valid:
        return ""
    ex = metrics.examples
    wrong = ex[ex["True Label"] != ex["Predicted"]].sort_values("Confidence", ascending=False)
    if wrong.empty:
        return "<p>No mistakes on these examples.</p>"
    from PIL import Image

    figs = []
    for _, r in wrong.head(limit).iterrows():
        item = str(r["Item"])
        caption = f"{r['True Label']} → {r['Predicted']}"
        if r["Confidence"] == r["Confidence"]:
            caption += f" ({r['Confidence']:.0%})"
        picture = ""
        try:
            with Image.open(item) as im:
                picture = f"<img src='{image_to_data_uri(im, size)}' style='max-width:{size}px;max-height:{size}px'/>"
        except Exception:  # noqa: BLE001 - a clip, or a file gone: its name instead
            picture = f"<div style='width:{size}px;font-size:10px;overflow:hidden'>{esc(item.rsplit('/', 1)[-1])}</div>"
        figs.append(f"<figure title='{esc(item)}' style='display:inline-block;margin:2px;font-size:10px;"
                    f"text-align:center'>{picture}<figcaption>{esc(caption)}</figcaption></figure>")
    more = f"<p>… and {len(wrong) - limit} more</p>" if len(wrong) > limit else ""
    return "<div>" + "".join(figs) + "</div>" + more


def task_html(model: ClassifierTask) -> str:
    """A trained model's notebook view: data, parameters, metrics, curves, mistakes and its task's pictures."""
    s = model._summary
    labels = s.get("labels", {})
    data_rows = [("source", s.get("source", "")), ("labels", len(labels)),
                 ("training examples", s.get("training_examples", "")),
                 ("validation examples", s.get("validation_examples", ""))]
    if s.get("augmented_examples"):
        data_rows.append(("augmented examples", s["augmented_examples"]))
    counts = "".join(f"<tr><td class='k'>{esc(k)}</td><td>{v}</td></tr>" for k, v in labels.items())
    tm, vm = model.training_metrics, model.validation_metrics
    acc = lambda m: f"{m.accuracy:.1%}" if m.is_valid else "–"  # noqa: E731
    extra = model._extra_html() if hasattr(model, "_extra_html") else ""
    curve = history_svg(getattr(model, "_history", []))
    mistakes_of = vm if vm.is_valid else tm
    mistakes = mistakes_html(mistakes_of)
    return (
        f"{_STYLE}<div class='cmlw'><div class='title'>{esc(type(model).__name__)}"
        f"<span class='badge'>training {acc(tm)}</span><span class='badge'>validation {acc(vm)}</span></div>"
        f"<details open><summary>Parameters</summary>{_kv_table(_parameter_rows(model.model_parameters))}"
        f"{_kv_table([('iterations trained', model._iterations)])}</details>"
        f"<details><summary>Data</summary>{_kv_table(data_rows)}<table><tr><th>label</th><th>examples</th></tr>"
        f"{counts}</table></details>"
        f"<details open><summary>Training metrics</summary>{metrics_body(tm, open_=False)}</details>"
        f"<details open><summary>Validation metrics</summary>{metrics_body(vm)}</details>"
        + (f"<details open><summary>Training curve</summary>{curve}</details>" if curve else "")
        + (f"<details open><summary>Mistakes ({'validation' if vm.is_valid else 'training'} examples)</summary>"
           f"{mistakes}</details>" if mistakes else "")
        + skipped_html(_not_in(s.get("skipped_files", []), tm.skipped), "Files skipped before training")
        + skipped_html(s.get("clips_with_few_hands", []), "Clips where most frames show no hand")
        + extra + "</div>"
    )


def skipped_entries(*lists: Iterable[dict]) -> list[dict]:
    """The skipped files of several lists (before training, training, validation), each file once."""
    seen, out = set(), []
    for entries in lists:
        for x in entries:
            key = (str(x.get("path")), str(x.get("reason")))
            if key not in seen:
                seen.add(key)
                out.append(x)
    return out


def _not_in(entries, shown) -> list[dict]:
    """`entries` less those already listed in `shown` (the training metrics list its own skipped files)."""
    listed = {(str(x.get("path")), str(x.get("reason"))) for x in shown}
    return [x for x in entries if (str(x.get("path")), str(x.get("reason"))) not in listed]


def task_text(model: ClassifierTask) -> str:
    """A trained model's plain-text summary (its repr in a terminal)."""
    s = model._summary
    tm, vm = model.training_metrics, model.validation_metrics
    lines = [f"{type(model).__name__}",
             f"  labels: {', '.join(model._labels)}",
             "  parameters: " + ", ".join(f"{k}={v}" for k, v in _parameter_rows(model.model_parameters)),
             f"  iterations trained: {model._iterations}",
             f"  training examples: {s.get('training_examples')}  validation examples: {s.get('validation_examples')}",
             f"  training accuracy: {tm.accuracy:.2%}" if tm.is_valid else "  training accuracy: n/a",
             f"  validation accuracy: {vm.accuracy:.2%}" if vm.is_valid else f"  validation: {vm.error}"]
    skipped = skipped_entries(s.get("skipped_files", []), tm.skipped, vm.skipped)
    if skipped:
        lines.append(f"  skipped files ({len(skipped)}):")
        lines += [f"    {x.get('path')}: {x.get('reason')}" for x in skipped[:20]]
        if len(skipped) > 20:
            lines.append(f"    … and {len(skipped) - 20} more")
    few = s.get("clips_with_few_hands", [])
    if few:
        lines.append(f"  clips where most frames show no hand ({len(few)}):")
        lines += [f"    {x.get('path')}: {x.get('reason')}" for x in few[:20]]
    return "\n".join(lines)


def session_html(session: MLTrainingSession) -> str:
    """A training session's notebook view: its phase, progress and checkpoints."""
    cps = "".join(f"<tr><td class='k'>{esc(c.phase.value)}</td><td>{c.iteration}</td><td>{esc(c.date.strftime('%H:%M:%S'))}</td>"
                  f"<td style='text-align:left'>{esc(', '.join(f'{k}={v:.3f}' for k, v in c.metrics.items()))}</td></tr>"
                  for c in session.checkpoints[-20:])
    return (f"{_STYLE}<div class='cmlw'><div class='title'>MLTrainingSession · {esc(session.task.__name__)}</div>"
            + _kv_table([("phase", session.phase.value), ("iteration", session.iteration),
                         ("directory", session.session_directory or "(in memory)"), ("date", session.date)])
            + f"<details open><summary>Checkpoints ({len(session.checkpoints)})</summary><table><tr><th>phase</th>"
              f"<th>iteration</th><th>time</th><th>metrics</th></tr>{cps}</table></details></div>")
