# The two commands: `make run` and `make test`. Each installs what it needs itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages the browser tests need; installed only where missing.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The demo config delivers to the reference PM API server too: start it beside the engine.
run: $(STAMP)
	@mkdir -p var
	@$(BIN)/chargebridge pm-sim --port 8099 --latency-ms 20 > var/pm-sim.log 2>&1 & \
	  sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/chargebridge run --config config.yaml

lint: $(STAMP)
	$(BIN)/ruff check engine channels tests bench
	$(BIN)/mypy engine channels

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.ingest_cpu

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
