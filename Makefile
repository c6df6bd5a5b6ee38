# lottery-ticket: every target does its own set-up on a fresh machine (virtualenv, Python deps
# including torch, the Rust extension built by maturin). `make help` lists the targets.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv installs from its cache outside the clone, so fresh clones reuse the multi-GB torch wheels.
UV := $(BIN)/uv
DEPS_STAMP := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.extension-built
RUST_SOURCES := $(shell find rust -name '*.rs') Cargo.toml Cargo.lock
DEMO_OUT ?= lottery-ticket-demo
WHEEL_STAMP := dist/.built
PY_SOURCES := $(shell find python -name '*.py' -o -name '*.pyi' -o -name py.typed)
# Linux wheels are linked by zig against glibc 2.17's symbols, so one wheel installs on any
# manylinux_2_17 (2014) or newer distribution; auditwheel checks that claim.
ifeq ($(shell uname -s),Linux)
WHEEL_FLAGS := --zig --compatibility manylinux_2_17
endif

.DEFAULT_GOAL := help
.PHONY: help demo test test-rust test-python lint docs bench bench-publish gpu-check wheel wheel-aarch64 fuzz clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv

$(DEPS_STAMP): requirements-dev.txt | $(BIN)/python
	$(UV) pip install --python $(BIN)/python -r requirements-dev.txt
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(RUST_SOURCES) pyproject.toml
	# An older version-specific build would shadow the abi3 one on import.
	rm -f python/lottery_ticket/_core.cpython-*.so
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop --release --uv
	touch $@

demo: $(BUILD_STAMP) ## Reproduce the Lottery Ticket result on MNIST-1D (table + figure)
	$(BIN)/lottery-ticket demo --out $(DEMO_OUT)

test: lint test-rust test-python docs ## Everything CI checks: lint, cargo test, stubs, mypy, pytest, the wheel, the docs

lint: $(DEPS_STAMP) ## ruff, cargo fmt, clippy with and without the binding, actionlint and the workflows' schema
	$(BIN)/ruff check python tests benches docs/hooks.py
	$(BIN)/ruff format --check python tests benches docs/hooks.py
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/actionlint .github/workflows/*.yml
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings

test-rust: ## cargo test (unit and property tests of the kernels), with and without the binding
	cargo test --release
	cargo test --release --no-default-features

wheel: $(WHEEL_STAMP) ## Build the abi3 wheel (CPython 3.10+; manylinux_2_17 on Linux) and the sdist into dist/

$(WHEEL_STAMP): $(DEPS_STAMP) $(RUST_SOURCES) $(PY_SOURCES) pyproject.toml README.md LICENSE
	rm -rf dist
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin build --release $(WHEEL_FLAGS) --out dist
	$(BIN)/maturin sdist --out dist
	$(if $(WHEEL_FLAGS),$(BIN)/auditwheel show dist/*.whl)
	touch $@

# Cross-built with Debian's Rust (its aarch64 standard library is a Debian package; rustup's
# targets need a download), linked by zig. CI builds the same wheel natively (.github/workflows).
AARCH64_STD := /usr/lib/rustlib/aarch64-unknown-linux-gnu
wheel-aarch64: $(DEPS_STAMP) ## Cross-build the manylinux_2_17 aarch64 wheel into dist/ (Debian: rustc-web, libstd-rust-web-dev:arm64)
	@test -d $(AARCH64_STD) || { echo "needs Debian's aarch64 Rust std: dpkg --add-architecture arm64 && apt-get update && apt-get install rustc-web libstd-rust-web-dev:arm64"; exit 2; }
	PATH=$(abspath $(BIN)):$$PATH RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64 $(BIN)/maturin build --release \
		--zig --compatibility manylinux_2_17 --target aarch64-unknown-linux-gnu --out dist
	$(BIN)/auditwheel show dist/*aarch64.whl

docs: $(BUILD_STAMP) ## Build the documentation site into site/ (strict: any warning fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The wheel is built first: tests/packaging installs it into a fresh virtualenv.
test-python: $(BUILD_STAMP) $(WHEEL_STAMP) ## stub check, mypy --strict, pytest (tests and doctests)
	$(BIN)/python -m mypy.stubtest lottery_ticket._core
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q tests python/lottery_ticket --doctest-modules

bench: $(BUILD_STAMP) ## Side-by-side benchmarks against peers (prints one table)
	$(BIN)/python -m pytest benches -q --benchmark-enable

bench-publish: $(BUILD_STAMP) ## Copy the last idle `make bench` table into the README and the performance page
	$(BIN)/python benches/publish.py

# GPU_CHECK_ARGS: --big adds the 4 B f32 workload; --out DIR, --budget SECONDS (benches/gpu_check.sh).
gpu-check: $(BUILD_STAMP) ## On a machine with a GPU: the CUDA tests (torch ops, then fused passes) and the GPU table, into gpu-check/
	PATH=$(abspath $(BIN)):$$PATH bash benches/gpu_check.sh $(GPU_CHECK_ARGS)

fuzz: $(BUILD_STAMP) ## Long fuzzing run: damaged ticket and checkpoint files, Rust entry points at scale
	LT_FUZZ_EXAMPLES=$${LT_FUZZ_EXAMPLES:-20000} LT_KILLS=$${LT_KILLS:-200} $(BIN)/python -m pytest -q \
		tests/pruner/test_ticket_fuzz.py tests/pruner/test_killed_saves.py
	PROPTEST_CASES=$${PROPTEST_CASES:-64} cargo test --release --no-default-features -- --ignored at_scale

clean: ## Remove build outputs and the virtualenv
	rm -rf target dist site $(VENV)
