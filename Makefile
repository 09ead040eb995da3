# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CAPTURE := tests/data/pcaps/suricata__smb2-peter.pcap

.PHONY: demo test lint typecheck unit bench clean

# Debian packages the live tests and the kernel data path need; installed only when
# missing (the tests say what they skip, and why, on a machine without them).
SYSTEM_TOOLS := ping:iputils-ping

$(STAMP): pyproject.toml
	@for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; package=$${pair#*:}; \
	  if ! command -v $$tool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq $$package >/dev/null || \
	      { apt-get update -qq >/dev/null && apt-get install -y -qq $$package >/dev/null; }; \
	  fi; \
	done
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pping --read $(DEMO_CAPTURE) -r 0

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/capture_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info
