"""What `make dashboard` adds to Voilà, kept out of `createml_widgets` (whose import loads torch, ~300 MB,
which the server process never needs): a bound on the number of live kernels.

Every GET of the dashboard starts a kernel (~360 MB once the trainer is loaded); without a bound, a page
reloaded in a loop (or a crawler) fills the machine's memory. Past `max_kernels` the page says so, with
HTTP 503, and starts nothing; a kernel whose page was closed is culled after KERNEL_IDLE_S (Makefile),
which frees its place.
"""
from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer


class BoundedKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager that refuses to start more than `max_kernels` kernels at once."""

    max_kernels = Integer(4, config=True, help="Most kernels alive at once (one per open dashboard page).")

    async def start_kernel(self, *args, **kwargs):
        if kwargs.get("kernel_id") is None and len(self.list_kernel_ids()) >= self.max_kernels:
            # The reason is what Voila's error page shows (its heading); plain ASCII, it is the status line too.
            text = (f"Too many open dashboards: this server allows {self.max_kernels} at once (each open page holds "
                    "a Python kernel of its own). Close one of them, or wait a couple of minutes for closed pages "
                    "to be released, then reload this page.")
            raise web.HTTPError(503, text, reason=text)
        return await super().start_kernel(*args, **kwargs)
