"""How the widgets look wherever they are shown: status markers without emoji, buttons that look disabled."""
from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

from ._paths import hide_root

if TYPE_CHECKING:
    import ipywidgets as widgets

# The one palette of the widgets' markers and status messages, by level.
MARKER_COLORS = {"error": "#c62828", "warning": "#b25000", "ok": "#1a7f37", "info": "#6e6e73"}


def message_html(css_prefix: str, text: str, level: str = "info", root: str | os.PathLike | None = None) -> str:
    """A status line in the palette's colour of `level`, with the class `<css_prefix>-<level>` ("" for no text).

    The absolute path of `root` (the data folder) is left out of the text: a dashboard may be served to
    others, who need not learn where the data lies on the server.
    """
    text = hide_root(text, root)
    if not text:
        return ""
    color = MARKER_COLORS.get(level, MARKER_COLORS["info"])
    return f"<span class='{css_prefix}-{html.escape(level)}' style='color:{color}'>{html.escape(text)}</span>"


def marker_html(level: str, text: str | None = None) -> str:
    """A small coloured tag ("ERROR", "WARNING") drawn with CSS and plain letters.

    Emoji (⚠️, ⛔, 📁) need an emoji font, which many Linux browsers (Debian's Chromium) lack: they
    show as empty boxes there. Letters in a coloured box read the same everywhere.
    """
    color = MARKER_COLORS.get(level, MARKER_COLORS["info"])
    label = html.escape(text if text is not None else level)
    return (f"<span class='cmlw-marker cmlw-marker-{html.escape(level)}' style='display:inline-block;"
            f"padding:0 5px;margin-right:6px;border-radius:3px;background:{color};color:#fff;font-size:10px;"
            f"font-weight:700;letter-spacing:0.03em;text-transform:uppercase;line-height:16px;"
            f"vertical-align:1px'>{label}</span>")


def style_while_enabled(button: widgets.Button, style: str) -> None:
    """Give `button` its `button_style` ("primary", "warning", …) only while it is enabled.

    Jupyter only fades a disabled button (opacity 0.6): an orange Cancel stays orange and looks
    clickable. Disabled, the button turns plain grey and gets the `cmlw-button-disabled` class (the
    app's style sheet adds a not-allowed cursor); enabled again, it gets its colour back.
    """
    def sync(_change=None) -> None:
        if button.disabled:
            button.button_style = ""
            button.add_class("cmlw-button-disabled")
        else:
            button.button_style = style
            button.remove_class("cmlw-button-disabled")

    button.observe(sync, "disabled")
    sync()


def no_null_titles(widget: widgets.Widget) -> None:
    """Give every widget under `widget` a tooltip: ipywidgets writes an unset one (None) into the page
    as `title="null"` on a control's label. A labelled control gets its own label; others none ("")."""
    seen = set()
    stack = [widget]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        # anywidget models (the charts, the camera) draw no label, and fail to start in
        # the browser when their state changes before they are shown: left alone.
        if w.has_trait("tooltip") and w.tooltip is None and not w.has_trait("_esm"):
            w.tooltip = getattr(w, "description", "") or ""
        stack.extend(getattr(w, "children", ()) or ())
