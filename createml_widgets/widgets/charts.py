"""LineChart and Heatmap: small anywidget charts drawn as SVG in the browser (the ES module is charts.js).

They replace plotly's FigureWidget, which shipped ~5 MB of plotly.js into every page and saved notebook,
and whose start-up could miss anywidget's 2 s limit on a loaded machine.

* `LineChart(panels, series)`: curves of (x, value) points, one SVG per panel; hovering shows the values
  at the iteration under the pointer. `set_points` sends the whole series (the synced `points` trait, what
  a saved notebook keeps); `extend` sends only the new points, as a small message the browser appends;
  `sync()` puts the whole series into the synced state again (done at the end of a run).
* `Heatmap(x, y, z)`: cells with their counts, the column (`x`, predicted) and row (`y`, true) labels;
  a click on a cell calls the `on_click(true_label, predicted)` callbacks.

Both carry a static SVG in their rich view (`text/html`), what nbconvert and GitHub show without widgets.
"""
from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anywidget
import traitlets

ESM = Path(__file__).with_name("charts.js")
CSS = """
.cmlw-chart, .cmlw-heatmap { font-family: -apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif; }
.cmlw-chart { position: relative; font-size: 12px; max-width: 760px; }
.cmlw-chart-panels { display: flex; flex-wrap: wrap; gap: 8px; }
.cmlw-chart-panel { flex: 1 1 300px; max-width: 380px; min-width: 0; }
.cmlw-chart-svg { width: 100%; height: auto; display: block; }
.cmlw-chart-title { font-size: 14px; font-weight: 600; fill: #1d1d1f; }
.cmlw-chart-plot { fill: #fafafa; stroke: #e0e0e5; }
.cmlw-chart-grid line { stroke: #e5e5ea; stroke-width: 1; }
.cmlw-chart-grid text, .cmlw-chart-axis-title { font-size: 11px; fill: #6e6e73; }
.cmlw-chart-guide { stroke: #8e8e93; stroke-dasharray: 2 2; }
.cmlw-chart-hit { cursor: crosshair; }
.cmlw-chart-tip { position: absolute; z-index: 5; pointer-events: none; background: rgba(255,255,255,.96);
  border: 1px solid #d2d2d7; border-radius: 4px; padding: 4px 8px; white-space: nowrap;
  box-shadow: 0 1px 4px rgba(0,0,0,.12); }
.cmlw-chart-tip-head { font-weight: 600; }
.cmlw-chart-legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin-top: 2px; color: #1d1d1f; }
.cmlw-chart-legend-mark { display: inline-block; width: 18px; margin-right: 5px; vertical-align: middle; }
.cmlw-heatmap { max-width: 100%; overflow-x: auto; }
.cmlw-heatmap-svg { max-width: 100%; height: auto; display: block; }
.cmlw-heatmap-cell { cursor: pointer; stroke: none; }
.cmlw-heatmap-cell:hover { stroke: #1d1d1f; stroke-width: 1.5; }
.cmlw-heatmap-selected { stroke: #ff9500; stroke-width: 2.5; }
.cmlw-heatmap-count { font-size: 12px; fill: #1d1d1f; pointer-events: none; }
.cmlw-heatmap-count-dark { fill: #fff; }
.cmlw-heatmap-xtick, .cmlw-heatmap-ytick { font-size: 12px; fill: #1d1d1f; }
.cmlw-heatmap-axis-title { font-size: 12px; fill: #6e6e73; }
"""


def _series_lists(data: dict) -> dict[str, list[list[float]]]:
    return {str(k): [[_num(x), _num(y)] for x, y in pts] for k, pts in data.items()}


def _num(v):
    """JSON has no NaN: a missing value travels as None."""
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else (v if math.isfinite(v) else None)


class _StaticFallback:
    """Adds the chart's static `to_html()` to the rich view, beside the widget view."""

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/html"] = self.to_html()
        return bundle


class LineChart(_StaticFallback, anywidget.AnyWidget):
    """Curves of (x, y) points in one or more panels.

    `panels`: [{"title": "Loss", "percent": False, "min": 0, "max": None}, ...]; `series`:
    [{"key": "loss", "name": "training loss", "panel": 0, "color": "#0071e3", "dash": False}, ...].
    """

    _esm = ESM
    _css = CSS
    _kind = traitlets.Unicode("line").tag(sync=True)
    panels = traitlets.List(traitlets.Dict()).tag(sync=True)
    series = traitlets.List(traitlets.Dict()).tag(sync=True)
    points = traitlets.Dict(help="{series key: [[x, y], ...]}: the whole series as of the last full sync").tag(sync=True)
    x_title = traitlets.Unicode("iteration").tag(sync=True)

    def __init__(self, panels: Iterable[Mapping] = (), series: Iterable[Mapping] = (), **kwargs: object):
        super().__init__(panels=[dict(p) for p in panels], series=[dict(s) for s in series], **kwargs)
        self._data: dict[str, list[list[float]]] = {s["key"]: [] for s in self.series}
        self.on_msg(self._on_browser_msg)

    @property
    def data(self) -> dict[str, list[tuple]]:
        """Every point of every series, as drawn (those not yet in `points` included)."""
        return {k: [tuple(p) for p in pts] for k, pts in self._data.items()}

    def set_points(self, data: dict) -> None:
        """Replace every series (sent whole: the synced state)."""
        self._data = {s["key"]: [] for s in self.series} | _series_lists(data)
        self.sync()

    def extend(self, data: dict) -> None:
        """Append points to the series named in `data` ({key: [(x, y), ...]}): only these travel."""
        new = {k: v for k, v in _series_lists(data).items() if v}
        if not new:
            return
        start = {k: len(self._data.setdefault(k, [])) for k in new}
        for k, pts in new.items():
            self._data[k].extend(pts)
        self.send({"type": "append", "start": start, "points": new})

    def plot(self, data: dict) -> None:
        """Show exactly `data` ({key: [(x, y), ...]}): when it only adds points to the series drawn, just
        those are sent (`extend`); when it rewrote them, the whole of it (`set_points`)."""
        new = _series_lists(data)
        drawn = self._data
        if all(pts[:len(drawn.get(k, []))] == drawn.get(k, []) for k, pts in new.items()) and set(drawn) <= set(new):
            self.extend({k: pts[len(drawn.get(k, [])):] for k, pts in new.items()})
        else:
            self.set_points(data)

    def sync(self, force: bool = False) -> None:
        """Put the whole series into the synced `points` (what a saved notebook or a new view starts from)."""
        full = {k: [list(p) for p in pts] for k, pts in self._data.items()}
        if full != self.points:
            self.points = full
        elif force:
            self.send_state("points")

    def _on_browser_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "resend":  # a view missed a batch
            self.sync(force=True)


    def to_html(self, width: int = 360, height: int = 240) -> str:
        """The chart as static SVG (no script): what a notebook shows where widgets are not drawn."""
        parts = []
        for index, panel in enumerate(self.panels or [{}]):
            series = [s for s in self.series if s.get("panel", 0) == index]
            pts = [p for s in series for p in self._data.get(s["key"], []) if p[1] is not None]
            x1 = max([1] + [p[0] for p in pts])
            y0 = panel.get("min") if panel.get("min") is not None else min([0] + [p[1] for p in pts])
            y1 = panel.get("max") if panel.get("max") is not None else max([0] + [p[1] for p in pts])
            y1 = y1 if y1 > y0 else y0 + 1
            left, top, pw, ph = 40, 22, width - 50, height - 46

            def xy(p, left=left, top=top, pw=pw, ph=ph, x1=x1, y0=y0, y1=y1):
                return f"{left + pw * p[0] / x1:.1f},{top + ph * (1 - (min(max(p[1], y0), y1) - y0) / (y1 - y0)):.1f}"

            body = [f"<text x='{left}' y='14' font-size='13' font-weight='600'>{html.escape(panel.get('title', ''))}</text>",
                    f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fafafa' stroke='#e0e0e5'/>"]
            for value in (y0, y1):
                label = f"{value:.0%}" if panel.get("percent") else f"{value:.3g}"
                y = top + ph * (1 - (value - y0) / (y1 - y0))
                body.append(f"<text x='{left - 4}' y='{y + 4:.1f}' font-size='10' fill='#6e6e73' "
                            f"text-anchor='end'>{label}</text>")
            body.append(f"<text x='{left + pw / 2:.0f}' y='{height - 6}' font-size='10' fill='#6e6e73' "
                        f"text-anchor='middle'>{html.escape(self.x_title)} 0–{x1:g}</text>")
            for s in series:
                line = " ".join(xy(p) for p in self._data.get(s["key"], []) if p[1] is not None)
                dash = " stroke-dasharray='4 3'" if s.get("dash") else ""
                body.append(f"<polyline fill='none' stroke='{html.escape(s.get('color', '#0071e3'))}' "
                            f"stroke-width='1.6'{dash} points='{line}'><title>{html.escape(s.get('name', ''))}"
                            "</title></polyline>")
            parts.append(f"<svg class='cmlw-chart-static' width='{width}' height='{height}' "
                         f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg' role='img'>"
                         f"{''.join(body)}</svg>")
        legend = " · ".join(f"<span style='color:{html.escape(s.get('color', '#0071e3'))}'>"
                            f"{'┄' if s.get('dash') else '—'} {html.escape(s.get('name', s['key']))}</span>"
                            for s in self.series)
        return f"<div>{''.join(parts)}<div style='font-size:11px'>{legend}</div></div>"


class Heatmap(_StaticFallback, anywidget.AnyWidget):
    """A clickable grid of counts: `z[i][j]` for row `y[i]` (true label) and column `x[j]` (predicted)."""

    _esm = ESM
    _css = CSS
    _kind = traitlets.Unicode("heatmap").tag(sync=True)
    x = traitlets.List(traitlets.Unicode()).tag(sync=True)
    y = traitlets.List(traitlets.Unicode()).tag(sync=True)
    z = traitlets.List(traitlets.List()).tag(sync=True)
    selected = traitlets.List(traitlets.Unicode(), help="[row, column] of the cell outlined").tag(sync=True)
    x_title = traitlets.Unicode("Predicted").tag(sync=True)
    y_title = traitlets.Unicode("True label").tag(sync=True)

    def __init__(self, x: Iterable[object] = (), y: Iterable[object] = (), z: Iterable[Iterable[int]] = (),
                 **kwargs: object):
        super().__init__(x=[str(v) for v in x], y=[str(v) for v in y],
                         z=[[int(v) for v in row] for row in z], **kwargs)
        self._click_handlers: list = []
        self.on_msg(self._on_browser_msg)

    def on_click(self, callback: Callable[[str, str], object]) -> None:
        """Call `callback(true_label, predicted)` when a cell is clicked in the browser."""
        self._click_handlers.append(callback)

    def _on_browser_msg(self, _widget, content, _buffers) -> None:
        if not (isinstance(content, dict) and content.get("type") == "click"):
            return
        row, col = str(content.get("true", "")), str(content.get("predicted", ""))
        if row in self.y and col in self.x:
            for callback in list(self._click_handlers):
                callback(row, col)


    def to_html(self) -> str:
        """The grid as a static HTML table (no script)."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.x)
        rows = "".join(f"<tr><th>{html.escape(t)}</th>" + "".join(f"<td>{v or ''}</td>" for v in row) + "</tr>"
                       for t, row in zip(self.y, self.z))
        return (f"<table class='cmlw-heatmap-static'><tr><th>{html.escape(self.y_title)} \\ "
                f"{html.escape(self.x_title)}</th>{head}</tr>{rows}</table>")
