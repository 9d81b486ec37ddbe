"""Plotly FigureWidget, when it can be made (plotly 6+ needs the `anywidget` package for it)."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif"


def figure_widget(figure):
    """`go.FigureWidget(figure)`, or None when plotly's widget cannot be used here."""
    try:
        import plotly.graph_objects as go

        return go.FigureWidget(figure)
    except Exception as err:  # noqa: BLE001 - ImportError, or plotly's "install anywidget"
        log.warning("interactive plotly charts are unavailable (%s); falling back to HTML", err)
        return None
