# Two entry points: `make run` and `make test`. Each sets up .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.runtime-stamp

.PHONY: run test lint types unit alerts sysdeps clean

# `make run` needs only the runtime dependencies; `make test` adds the dev tools on top.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The daemon on its embedded defaults: the in-process sandbox API and SQLite under ./var/.
# Once the socket answers, a line says where it is and what to type next (a daemon already
# answering there is not taken for this one).
run: $(RUN_STAMP)
	mkdir -p var
	@export AISD_DB_PATH=$${AISD_DB_PATH:-var/aisd.db} AISD_SOCKET_PATH=$${AISD_SOCKET_PATH:-var/aisd.sock} \
		AISD_LOG_FORMAT=$${AISD_LOG_FORMAT:-console}; \
	if $(BIN)/aisd status --timeout 1 >/dev/null 2>&1; then \
		echo "an aisd daemon already answers on $$AISD_SOCKET_PATH: stop it first" >&2; exit 1; \
	fi; \
	( for i in $$(seq 300); do \
		if $(BIN)/aisd status --timeout 1 >/dev/null 2>&1; then \
			printf '\naisd is ready; its socket is %s. In another terminal:\n  export AISD_SOCKET_PATH=%s\n  .venv/bin/aisd submit --demo --owner alice\n\n' \
				"$$AISD_SOCKET_PATH" "$$AISD_SOCKET_PATH"; exit 0; \
		fi; sleep 0.2; done ) & \
	exec $(BIN)/aisd run --sandbox

# Debian packages some tests need (systemd-analyze, setpriv, promtool, a PostgreSQL server that
# the tests start themselves with initdb and pg_ctl); installed only when missing.
sysdeps:
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	{ command -v pg_config >/dev/null && test -x "$$(pg_config --bindir)/initdb" \
		&& test -x "$$(pg_config --bindir)/pg_ctl"; } || missing="$$missing postgresql"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
		else echo "missing Debian packages:$$missing (tests that need them are skipped)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check aisd tests bench
	$(BIN)/ruff format --check aisd tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The Prometheus alert rules: valid, and doing what their unit tests say.
alerts: sysdeps
	@if command -v promtool >/dev/null; then \
		cd contrib/prometheus && promtool check rules aisd-alerts.yml \
			&& promtool test rules aisd-alerts.test.yml; \
	else echo "promtool missing (Debian package prometheus): alert rules not checked"; fi

# Three pytest-xdist workers, a test file each at a time: over half of the suite's wall time is
# real daemons, sandboxes and PostgreSQL waiting on timers and each other, which overlaps well
# even on 2 cores (2026-12-01, load 4.5-5 from other work: one process 17m56, 2 workers 9m50,
# 3 workers 7m06). Each worker has its own tmp_path tree and, when a test asks, its own
# PostgreSQL server (one test restarts the server under its daemons). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3

test: $(STAMP) sysdeps lint types alerts
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
