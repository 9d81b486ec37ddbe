"""What the app does about its page: ask before leaving while training runs, and learn when the page is gone.

Under Voilà each page has its own kernel, which lives on until culled after the page is closed; the app
frees its memory when told the page was left (`TrainerApp.page_left`).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Callable

import ipywidgets as widgets
import traitlets

# Run by the browser when the guard's HTML is drawn (an image that cannot load calls onerror; ipywidgets'
# HTML runs no <script>): keeps window.__cmlwTraining current, and once per page asks before leaving
# while it is true, and clicks the hidden "page left" button when the page is really gone.
_GUARD_JS = ("window.__cmlwTraining={active};if(!window.__cmlwGuard){{window.__cmlwGuard=1;"
             "window.addEventListener('beforeunload',function(e){{if(window.__cmlwTraining){{e.preventDefault();"
             "e.returnValue='';return '';}}}});window.addEventListener('pagehide',function(){{"
             "var b=document.querySelector('button.cmlw-page-left');if(b)b.click();}});}}")


class LeaveGuard(widgets.VBox):
    """Invisible: the browser asks before leaving the page while `active` (training runs), and
    `on_page_left` callbacks run when the page is closed or reloaded."""

    active = traitlets.Bool(False)

    def __init__(self):
        self.html = widgets.HTML()
        self.page_left_button = widgets.Button(description="page left", tooltip="",
                                               layout=widgets.Layout(display="none"))
        self.page_left_button.add_class("cmlw-page-left")
        super().__init__(children=[self.html, self.page_left_button], layout=widgets.Layout(height="0px"))
        self.add_class("cmlw-leave-guard")
        self._draw()

    @traitlets.observe("active")
    def _draw(self, _change=None) -> None:
        js = _GUARD_JS.format(active="true" if self.active else "false")
        self.html.value = f"<img src='data:,' alt='' style='display:none' onerror=\"{js}\">"

    def on_page_left(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the page showing the app is closed or reloaded."""
        self.page_left_button.on_click(lambda _b: callback())


def served_by_voila() -> bool:
    """Whether this kernel serves a Voilà page (rather than a notebook)."""
    return "VOILA_REQUEST_URL" in os.environ or os.environ.get("SERVER_SOFTWARE", "").startswith("voila")


def return_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc), so a task switched away
    from stops counting against the session's memory."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
