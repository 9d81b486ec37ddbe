# One command each: `make dashboard` (the main job), `make test`, `make bench`.
# Every target sets itself up: it creates .venv and installs what it needs (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8866
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test dashboard bench lint chromium clean binder-check user-bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build on this machine's disk (a loose spec pulls a CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,distributed]'
	@touch $@

# The browser test drives Debian's Chromium (never `playwright install`: it downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The library's tests run in TEST_WORKERS processes (pytest-xdist, a test file per process at a time: its
# module fixtures stay in one process); the browser tests then run alone, as a user's page would, since
# their timings (frames per second, latency, kernel memory) are read under no other load.
TEST_WORKERS ?= 2
test: install chromium
	$(PY) -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile -m "not browser"
	$(PY) -m pytest -q -ra --durations=10 -m browser

# Kernels of pages that were closed or reloaded are shut down after KERNEL_IDLE_S seconds without a page
# (Voilà's own shutdown-on-leave request is refused for want of an _xsrf cookie, voila issue #1458): a
# kernel with its page open is never culled, even while it trains in the background.
KERNEL_IDLE_S ?= 120
KERNEL_CULL_INTERVAL_S ?= 30

# Served to this machine only: requests whose Host is not localhost or a loopback address are refused
# (403, voila.json: a DNS-rebinding page cannot reach it), and at most MAX_KERNELS pages hold a kernel
# at once (createml_widgets_server). On a network, deliberately: IP=0.0.0.0 TOKEN=<a long secret>
# (then any Host name is accepted and the token is what keeps others out; see README).
MAX_KERNELS ?= 4
IP ?= 127.0.0.1
TOKEN ?=

dashboard: install
	$(VENV)/bin/voila notebooks/dashboard.ipynb --port=$(PORT) --Voila.ip=$(IP) --no-browser --MappingKernelManager.cull_idle_timeout=$(KERNEL_IDLE_S) --MappingKernelManager.cull_interval=$(KERNEL_CULL_INTERVAL_S) --MappingKernelManager.cull_connected=False --BoundedKernelManager.max_kernels=$(MAX_KERNELS)$(if $(TOKEN), --Voila.token=$(TOKEN) --Voila.tornado_settings=allow_remote_access=True)

bench: install
	$(PY) -m benchmarks

# Binder's install as repo2docker does it, checked end to end: a fresh venv from binder/requirements.txt
# (torch from the registry here in place of PyTorch's CPU index: torch==2.13.0 is the local CPU build),
# binder/postBuild run in it (with a HOME of its own), then the dashboard browser test serving Voilà from
# that venv, with Binder's start settings and the kernel's memory sampled under 2 GB.
BINDER_VENV ?= .binder-venv
binder-check: install chromium
	rm -rf $(BINDER_VENV)
	$(PYTHON) -m venv $(BINDER_VENV)
	$(BINDER_VENV)/bin/python -m pip install -q --upgrade pip
	sed -e '/^--extra-index-url/d' -e 's/^torch==\(.*\)+cpu$$/torch==\1/' binder/requirements.txt > $(BINDER_VENV)/requirements.txt
	$(BINDER_VENV)/bin/python -m pip install -q -r $(BINDER_VENV)/requirements.txt
	mkdir -p $(BINDER_VENV)/home
	HOME=$(abspath $(BINDER_VENV))/home PATH=$(abspath $(BINDER_VENV))/bin:$$PATH bash binder/postBuild
	HOME=$(abspath $(BINDER_VENV))/home OMP_NUM_THREADS=2 CREATEML_WIDGETS_WORKERS=2 \
		DASHBOARD_MAKE_VARS="VENV=$(BINDER_VENV)" $(PY) -m pytest -q -ra -p no:cacheprovider tests/browser/test_dashboard.py

# The install a user gets (a fresh venv: torch==2.13.0, then `pip install .`, no extras): the image
# backbone's speed there next to the eager torch baseline, in one run, from outside the checkout.
USER_VENV ?= .user-venv
user-bench:
	rm -rf $(USER_VENV)
	$(PYTHON) -m venv $(USER_VENV)
	$(USER_VENV)/bin/python -m pip install -q --upgrade pip
	$(USER_VENV)/bin/python -m pip install -q torch==2.13.0
	$(USER_VENV)/bin/python -m pip install -q .
	cd /tmp && $(abspath $(USER_VENV))/bin/python $(abspath benchmarks/user_install.py)

lint: install
	$(VENV)/bin/ruff check createml_widgets tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
