# Two entry points: `make run` and `make test`. Each sets up .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint types unit alerts sysdeps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The daemon on its embedded defaults: the in-process sandbox API and SQLite under ./var/.
run: $(STAMP)
	mkdir -p var
	AISD_DB_PATH=$${AISD_DB_PATH:-var/aisd.db} AISD_SOCKET_PATH=$${AISD_SOCKET_PATH:-var/aisd.sock} \
		AISD_LOG_FORMAT=$${AISD_LOG_FORMAT:-console} $(BIN)/aisd run --sandbox

# Debian packages some tests need (systemd-analyze, setpriv, promtool); installed only when missing.
sysdeps:
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
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

test: $(STAMP) sysdeps lint types alerts
	$(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
