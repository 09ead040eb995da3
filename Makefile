# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CAPTURE := tests/data/pcaps/suricata__smb2-peter.pcap

.PHONY: demo test lint typecheck unit bench clean

# Debian packages for the kernel data path (clang, libbpf headers, bpftool) and the
# live tests (ping); installed when missing and running as root (CI is root). Without
# them the tests that need them say what they skip, and why.
SYSTEM_PACKAGES := clang libbpf-dev bpftool iputils-ping
BPF_OBJECT := build/bpf/pping.bpf.o

$(STAMP): pyproject.toml
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; }; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BPF_OBJECT): bpf/pping.bpf.c bpf/pping.h $(STAMP)
	@if command -v clang >/dev/null 2>&1; then $(MAKE) -s -C bpf; \
	 else echo "clang is missing: the kernel data path is not built"; fi

demo: $(STAMP) $(BPF_OBJECT)
	$(BIN)/pping --read $(DEMO_CAPTURE) -r 0
	@if [ "$$(id -u)" = 0 ] && [ -f $(BPF_OBJECT) ]; then $(BIN)/python -m pping.demo; \
	 else echo "live demo skipped: it needs root (sudo make demo) and clang"; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(BPF_OBJECT)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/capture_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info
