# Everything a fresh machine needs comes from here: `make test` and `make demo` set up the
# virtualenv, the extras and any services the tests use before running.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: install debs services lint typecheck docs docs-build test test-fast compat demo bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# promtool checks the exposition and the alert rules; Prometheus and Alertmanager run in the
# end-to-end tests and the demo.
debs:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
		echo "installing prometheus and prometheus-alertmanager (Debian packages)"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	fi

# Redis and PostgreSQL on 127.0.0.1 (the integration tests use them); installed and started
# only when missing.
services:
	@if ! command -v redis-server >/dev/null || ! command -v pg_ctlcluster >/dev/null; then \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends redis-server postgresql >/dev/null; \
	fi
	@if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
		echo "starting redis-server on 127.0.0.1:6379"; \
		mkdir -p /var/lib/redis /var/log/redis; \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
			--dir /var/lib/redis --logfile /var/log/redis/ci.log; \
	fi
	@if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		echo "starting PostgreSQL on 127.0.0.1:5432"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy --strict resilience_otel

# The documentation site on http://127.0.0.1:8000 (rebuilt on every save).
docs: install
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

# --strict: a broken link, a missing include or a reference that no longer matches fails.
docs-build: install
	$(VENV)/bin/mkdocs build --strict --site-dir .site

test: install debs services lint typecheck docs-build
	$(VENV)/bin/pytest
	$(PY) -m compat.run

test-fast: install
	$(VENV)/bin/pytest -m "not slow" -x -q

# httpx's and redis-py's own test suites (from their pinned sdists, compat/versions.txt), run
# plain and with every client wrapped; fails when wrapping changes an outcome that
# compat/known-differences.txt does not explain. Redis runs on its own server, not on 6379.
# `make test` ends with it (about 3.5 minutes on two cores).
compat: install services
	$(PY) -m compat.run $(COMPAT_ARGS)

# The demo runs Prometheus and Alertmanager when it can install them, and goes on without.
demo: install
	@$(MAKE) --no-print-directory debs || echo "prometheus not installed: the demo runs without Prometheus and Alertmanager"
	$(VENV)/bin/resilience-otel demo $(DEMO_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.db
	$(PY) -m bench.libraries

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis dist build
