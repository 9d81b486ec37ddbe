"""ConfusionMatrix: a clickable heatmap of MLClassifierMetrics, with per-class precision and recall.

Click a cell (or call `select_cell(true_label, predicted)`, or use the "most confused" buttons)
to see the examples in it: thumbnails with the model's confidence, from `metrics.examples_in_cell`.
Video examples show a frame from the middle of their time range (the examples' Start and End).
Examples the hand tasks found no hand in are the "(no hand)" column (`metrics.NO_PREDICTION`);
the files left without a prediction (`metrics.skipped`) are listed under the matrix.
"""
from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..display import confusion_table_html, precision_recall_html
from ..metrics import NO_PREDICTION
from ._media import figure_html, placeholder_html, thumbnail_uri, video_frame_at, video_frames
from ._paths import hide_root
from ._tasks import is_media_file
from .charts import Heatmap

if TYPE_CHECKING:
    import pandas as pd

    from ..metrics import MLClassifierMetrics

log = logging.getLogger(__name__)
MAX_EXAMPLES_SHOWN = 24
MAX_SKIPPED_SHOWN = 50


def _short_name(name: str, path: str | None) -> str:
    """The name without the file's folders: ("/data/wave/clip.mp4 [0s–1s]", "/data/wave/clip.mp4") ->
    "clip.mp4 [0s–1s]". `path`: the file the example comes from (what the name starts with)."""
    name = str(name)
    if path and name.startswith(path):
        return Path(path).name + name[len(path):]
    return Path(name).name


def _middle(start: float | None, end: float | None) -> float | None:
    """The middle of a video example's time range in seconds (1.0 s–2.0 s -> 1.5), its start when the
    range is open-ended, None for a whole file."""
    if start is None and end is None:
        return None
    start = float(start or 0.0)
    return (start + float(end)) / 2 if end is not None else start


def _example_figure(example, size: int = 96, root=None) -> str:
    """A thumbnail of one row of `metrics.examples`: the photo, or the frame in the middle of a video
    example's time range (its Path, Start and End fields)."""
    item, true_label, predicted, confidence = (example["Item"], example["True Label"], example["Predicted"],
                                               example["Confidence"])
    conf = "–" if confidence is None or (isinstance(confidence, float) and math.isnan(confidence)) else f"{confidence:.0%}"
    caption = f"{predicted} · {conf}"
    file = example.get("Path")
    path = Path(file) if file and Path(file).is_file() else None
    title = hide_root(f"{item}\ntrue: {true_label}, predicted: {predicted} ({conf})", root)
    if path is None:
        return placeholder_html(f"{Path(str(item)).name} {caption}", size)
    try:
        if is_media_file(path, "video"):
            seconds = _middle(example.get("Start"), example.get("End"))
            if seconds is not None:
                frame = video_frame_at(path, seconds)
            else:
                frames = video_frames(path, count=1)
                frame = frames[0][1] if frames else None
            uri = thumbnail_uri(frame, size) if frame is not None else None
        else:
            uri = thumbnail_uri(path, size)
    except Exception as err:  # noqa: BLE001 - one unreadable example must not hide the others
        log.debug("no thumbnail for %s: %s", item, err)
        uri = None
    if uri is None:
        return placeholder_html(f"{path.name} {caption}", size)
    return figure_html(uri, caption, title, size, css="cmlw-thumb cmlw-example")


class ConfusionMatrix(widgets.VBox):
    """Explore MLClassifierMetrics: heatmap, precision/recall table, and the examples in any cell.

    `metrics`: one MLClassifierMetrics, or a dict of them ({"Validation": m1, "Training": m2}),
    chosen with toggle buttons. `root` (optional): the data folder, left out of the file paths shown
    (a dashboard may be served to others).
    """

    selected = traitlets.Tuple((), help="(true label, predicted label) of the cell shown")
    dataset = traitlets.Unicode("")

    def __init__(self, metrics: MLClassifierMetrics | Mapping[str, MLClassifierMetrics | None] | None = None,
                 root: str | os.PathLike | None = None, **kwargs: object):
        self.root = root
        self._metrics_by_name: dict = {}
        self._switching = False
        self.selected_examples = None  # pandas DataFrame of the selected cell
        self.dataset_toggle = widgets.ToggleButtons(options=[], style={"button_width": "110px"})
        self.dataset_toggle.add_class("cmlw-cm-dataset")
        self.dataset_toggle.observe(self._on_dataset, "value")
        self.summary = widgets.HTML()
        self.summary.add_class("cmlw-cm-summary")
        self.chart_box = widgets.Box()
        self.chart_box.add_class("cmlw-confusion-matrix-chart")
        self.heatmap = None  # charts.Heatmap of the metrics shown
        self.pr_html = widgets.HTML()
        self.pr_html.add_class("cmlw-precision-recall")
        self.pairs_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.pairs_box.add_class("cmlw-cm-pairs")
        self.true_dropdown = widgets.Dropdown(description="True", layout=widgets.Layout(width="200px"))
        self.true_dropdown.add_class("cmlw-cm-true")
        self.pred_dropdown = widgets.Dropdown(description="Predicted", layout=widgets.Layout(width="220px"))
        self.pred_dropdown.add_class("cmlw-cm-predicted")
        self.show_button = widgets.Button(description="Show examples", icon="images")
        self.show_button.add_class("cmlw-cm-show")
        self.show_button.on_click(lambda _b: self.select_cell(self.true_dropdown.value, self.pred_dropdown.value))
        self.examples_html = widgets.HTML()
        self.examples_html.add_class("cmlw-cm-examples")
        self.skipped_html = widgets.HTML()
        self.skipped_html.add_class("cmlw-cm-skipped")
        super().__init__(children=[
            self.dataset_toggle, self.summary,
            widgets.HBox([self.chart_box, self.pr_html], layout=widgets.Layout(flex_flow="row wrap")),
            self.skipped_html,
            widgets.HTML("<b>Most confused</b> <span style='color:#6e6e73'>(click a cell in the matrix, a pair, "
                         "or choose one)</span>"),
            self.pairs_box,
            widgets.HBox([self.true_dropdown, self.pred_dropdown, self.show_button]),
            self.examples_html,
        ], **kwargs)
        self.add_class("cmlw-confusion-matrix")
        self.metrics = metrics

    # -- data ----------------------------------------------------------------------------------
    @property
    def metrics(self) -> MLClassifierMetrics | None:
        """The MLClassifierMetrics shown now (None when there are none)."""
        return self._metrics_by_name.get(self.dataset_toggle.value) if self._metrics_by_name else None

    @metrics.setter
    def metrics(self, metrics: MLClassifierMetrics | Mapping[str, MLClassifierMetrics | None] | None) -> None:
        """Show `metrics` (one, or a dict by name: the first valid one is shown first)."""
        if metrics is None:
            by_name = {}
        elif isinstance(metrics, dict):
            by_name = {str(k): v for k, v in metrics.items() if v is not None}
        else:
            by_name = {"Metrics": metrics}
        self._metrics_by_name = by_name
        names = list(by_name)
        first_valid = next((n for n in names if by_name[n].is_valid), names[0] if names else None)
        self._switching = True  # new options fire value changes: draw once, at the end
        try:
            self.dataset_toggle.options = names
            self.dataset_toggle.layout.display = None if len(names) > 1 else "none"
            if first_valid is not None and self.dataset_toggle.value != first_valid:
                self.dataset_toggle.value = first_valid
        finally:
            self._switching = False
        self.dataset = self.dataset_toggle.value or ""
        self._render()

    def _on_dataset(self, change) -> None:
        if self._switching:
            return
        self.dataset = change["new"] or ""
        self._render()

    # -- drawing -------------------------------------------------------------------------------
    def _render(self) -> None:
        m = self.metrics
        self.selected = ()
        self.selected_examples = None
        self.examples_html.value = ""
        self.skipped_html.value = ""
        if m is None:
            self.summary.value = "<i>No metrics yet: train a model first.</i>"
            self._show_heatmap(None)
            self.pr_html.value = ""
            self.pairs_box.children = ()
            self.true_dropdown.options, self.pred_dropdown.options = [], []
            return
        if not m.is_valid:
            self.summary.value = (f"<span class='cmlw-cm-invalid' style='color:#b25000'>No metrics: "
                                  f"{html.escape(hide_root(str(m.error), self.root))}</span>")
            self._show_heatmap(None)
            self.pr_html.value = ""
            self.pairs_box.children = ()
            self.true_dropdown.options, self.pred_dropdown.options = [], []
            return
        no_hand = int((m.examples["Predicted"] == NO_PREDICTION).sum())
        no_hand_note = (f" · <span class='cmlw-cm-no-hand'>{no_hand} with no hand detected, counted as wrong "
                        f"(column {html.escape(NO_PREDICTION)})</span>" if no_hand else "")
        # Which data the number is measured on, in words: held-out examples, or those it learned from.
        name = self.dataset_toggle.value or ""
        measured_on = {"Validation": " held out from training",
                       "Training": " the model learned from (not a test on new data)"}.get(name, "")
        example_word = "example" if m.count == 1 else "examples"
        self.summary.value = (f"<div>{html.escape(name)} accuracy <b>{m.accuracy:.1%}</b> on {m.count} "
                              f"{example_word}{measured_on} · error {m.classification_error:.1%}{no_hand_note}</div>"
                              if name and name != "Metrics" else
                              f"<div>Accuracy <b>{m.accuracy:.1%}</b> on {m.count} {example_word} · "
                              f"error {m.classification_error:.1%}{no_hand_note}</div>")
        self.skipped_html.value = self._skipped_html(m)
        matrix = m.confusion_matrix
        self._draw_heatmap(matrix)
        self.pr_html.value = ("<div style='margin-left:16px'><b>Precision / recall</b>"
                              + precision_recall_html(m).replace("<table>", "<table class='cmlw-pr-table' style="
                                                                 "'border-collapse:collapse;font-size:12px'>")
                              + "</div>")
        true_labels = [str(x) for x in matrix.index]
        predicted = [str(x) for x in matrix.columns]
        self.true_dropdown.options = true_labels
        self.pred_dropdown.options = predicted
        self._draw_pairs(matrix)

    def _skipped_html(self, m) -> str:
        """The files these metrics have no prediction for, and whether each is counted as "(no hand)"."""
        if not m.skipped:
            return ""
        counted = set(m.examples.loc[m.examples["Predicted"] == NO_PREDICTION, "Item"])
        rows = []
        for entry in m.skipped[:MAX_SKIPPED_SHOWN]:
            name = str(entry.get("path", ""))
            how = f"counted as {NO_PREDICTION}" if name in counted else "not in these metrics"
            label = entry.get("label")
            reason = hide_root(str(entry.get("reason", "")), self.root)
            rows.append(f"<tr class='cmlw-cm-skipped-file'><td title='{html.escape(hide_root(name, self.root))}'>"
                        f"{html.escape(_short_name(name, entry.get('file')))}"
                        f"</td><td>{html.escape(str(label)) if label is not None else ''}</td>"
                        f"<td>{html.escape(reason)}</td><td>{html.escape(how)}</td></tr>")
        more = (f"<div style='color:#6e6e73'>… and {len(m.skipped) - MAX_SKIPPED_SHOWN} more</div>"
                if len(m.skipped) > MAX_SKIPPED_SHOWN else "")
        n = len(m.skipped)
        return (f"<details class='cmlw-cm-skipped-list'><summary><b>{n} file{'s' if n != 1 else ''} without a "
                "prediction</b> <span style='color:#6e6e73'>(e.g. no hand detected)</span></summary>"
                "<table style='border-collapse:collapse;font-size:12px'><tr><th style='text-align:left'>file</th>"
                "<th>label</th><th style='text-align:left'>reason</th><th style='text-align:left'>in the metrics</th>"
                f"</tr>{''.join(rows)}</table>{more}</details>")

    def _draw_heatmap(self, matrix) -> None:
        """The matrix as a clickable SVG heatmap (charts.Heatmap: no plotly.js); a click selects the cell."""
        heatmap = Heatmap(x=[str(c) for c in matrix.columns], y=[str(i) for i in matrix.index],
                          z=matrix.values.tolist())
        heatmap.on_click(self.select_cell)
        self._show_heatmap(heatmap)

    def _show_heatmap(self, heatmap) -> None:
        """Show `heatmap` (or nothing) in the chart box; the one it replaces is closed (no leaked comm)."""
        old, self.heatmap = self.heatmap, heatmap
        self.chart_box.children = (heatmap,) if heatmap is not None else ()
        if old is not None:
            old.close()

    def _draw_pairs(self, matrix) -> None:
        pairs = []
        for t in matrix.index:
            for p in matrix.columns:
                n = int(matrix.loc[t, p])
                if n and str(t) != str(p):
                    pairs.append((n, str(t), str(p)))
        pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
        buttons = []
        for n, t, p in pairs[:8]:
            b = widgets.Button(description=f"{t} → {p} ({n})", tooltip=f"true {t}, predicted {p}",
                               layout=widgets.Layout(width="auto"))
            b.add_class("cmlw-cm-pair")
            b.on_click(lambda _b, t=t, p=p: self.select_cell(t, p))
            buttons.append(b)
        if not buttons:
            buttons = [widgets.HTML("<span style='color:#1a7f37'>nothing confused: every example is on the "
                                    "diagonal</span>")]
        self.pairs_box.children = buttons

    def _repr_mimebundle_(self, **kwargs):
        """Beside the widget: the summary and the matrix as a static table, what nbconvert and GitHub show."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict) and self.metrics is not None and self.metrics.is_valid:
            bundle["text/html"] = self.summary.value + confusion_table_html(self.metrics)
        return bundle

    # -- selection -----------------------------------------------------------------------------
    def select_cell(self, true_label: str, predicted: str) -> pd.DataFrame:
        """Show the examples whose true label is `true_label` and prediction `predicted`
        (what clicking that cell does). Returns them as a DataFrame (Item, True Label, Predicted,
        Confidence), most confident first."""
        m = self.metrics
        if m is None or not m.is_valid:
            raise ValueError("there are no metrics to select from")
        true_label, predicted = str(true_label), str(predicted)
        examples = m.examples_in_cell(true_label, predicted).sort_values("Confidence", ascending=False)
        self.selected_examples = examples
        if true_label in self.true_dropdown.options:
            self.true_dropdown.value = true_label
        if predicted in self.pred_dropdown.options:
            self.pred_dropdown.value = predicted
        kind = "correct" if true_label == predicted else "confused"
        head = (f"<div class='cmlw-cm-selection'><b>True {html.escape(true_label)} · predicted "
                f"{html.escape(predicted)}</b> — {len(examples)} {kind} example{'s' if len(examples) != 1 else ''}"
                "</div>")
        figs = [_example_figure(r, root=self.root) for _, r in examples.head(MAX_EXAMPLES_SHOWN).iterrows()]
        more = (f"<div style='color:#6e6e73'>… and {len(examples) - MAX_EXAMPLES_SHOWN} more</div>"
                if len(examples) > MAX_EXAMPLES_SHOWN else "")
        empty = "<div style='color:#6e6e73'>no examples in this cell</div>" if examples.empty else ""
        self.examples_html.value = head + "<div>" + "".join(figs) + "</div>" + more + empty
        self.selected = (true_label, predicted)
        if self.heatmap is not None:
            self.heatmap.selected = [true_label, predicted]  # outlined in the heatmap
        return examples
