# nrstudio: set-up, tests, demo, benchmarks. `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed
SYSDEPS := libusb-1.0-0 xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 \
           libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 \
           libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libgomp1
PYTEST_ARGS ?=

.PHONY: all setup sysdeps venv demo test test-fast bench clean

all: test

setup: sysdeps $(STAMP)

# Missing Debian packages are installed with apt-get when run as root; otherwise listed.
sysdeps:
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then echo "installing system packages:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing system packages (install them as root):$$missing"; fi; \
	fi

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

# torch first and pinned (local CPU build), then the project with its dev extras, all under the constraints.
$(STAMP): $(VENV)/bin/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: setup
	$(VENV)/bin/nrstudio demo

# The whole suite; GL views need a real X server, so everything runs under Xvfb.
test: setup
	@start=$$(date +%s); \
	xvfb-run -a -s "-screen 0 1600x1000x24" $(VPY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS) tests; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s of tests"; exit $$rc

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q -x $(PYTEST_ARGS) tests

bench: setup
	$(VENV)/bin/nrstudio bench --report out/bench.json

clean:
	rm -rf $(VENV) out .pytest_cache
