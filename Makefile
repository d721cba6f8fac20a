# llmbox — build, test, run. `make test` is the one command CI runs (via .ci/run).
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
# Cargo's output directory: $CARGO_TARGET_DIR when set (make run and make image use it).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
STATIC_BIN := $(TARGET_DIR)/$(MUSL_TARGET)/release/llmbox
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The library's test doubles (in-memory box manager, static spoke directory, seeded generator):
# the integration tests, benches and lints need them; `build`/`static` leave them out.
TEST_FEATURES := --features test-doubles

.PHONY: build test lint unit run static image image-test bench-cluster bench-docker bench-scale test-multihost box-image test-image test-clients browser fuzz-smoke fuzz-long cargo-fuzz

build:
	$(CARGO) build --release

## Everything: formatting, lints, unit and integration tests (real Docker), the slow suites.
test: lint test-image test-clients
	$(CARGO) test --all-targets $(TEST_FEATURES) -- --test-threads=4
	$(MAKE) test-multihost
	$(MAKE) fuzz-smoke
	@echo "make test: all suites passed"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings
	$(CARGO) clippy --lib --bins -- -D warnings
	$(CARGO) clippy --lib --features fuzzing,test-doubles -- -D warnings
	$(CARGO) fmt --check --manifest-path fuzz/Cargo.toml

## The test box image (busybox rootfs, docker import); needs Debian's busybox-static.
test-image:
	bash tests/fixtures/build-test-image.sh

## Docker box manager vs the docker CLI: p50 of create->URL, exec, destroy (prints a table).
## LTO is off for this bench build only: the time measured is the daemon's and the socket's.
bench-docker: test-image
	CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 $(CARGO) bench --bench docker

## Build and start the hub with its defaults.
run: build
	$(TARGET_DIR)/release/llmbox hub

## Cluster benchmark: verb round trip, throughput and idle-spoke RSS vs a bare tungstenite echo.
bench-cluster:
	$(CARGO) bench --bench cluster $(TEST_FEATURES)

## Scale benchmark: one `llmbox hub` process and 100/1000/5000 spokes (RSS, threads, idle CPU,
## MCP round trips, reconnect after a hub kill) beside a bare tungstenite echo. Prints, asserts nothing.
## LTO off for this bench build only (build time on 2 cores); opt-level stays 3.
bench-scale:
	CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 $(CARGO) bench --bench scale $(TEST_FEATURES)

## Stripped static musl binary.
static:
	$(CARGO) build --release --target $(MUSL_TARGET)
	@file $(STATIC_BIN)
	@ls -l $(STATIC_BIN) | awk '{print "size:", $$5, "bytes"}'

## Real MCP clients for the hub's end-to-end tests: the official Python SDK 1.x and 2.x, each in
## its own virtualenv (tests/clients/*.py run in them), and Debian's chromium + chromedriver
## with selenium for the activation-page test; django-oauth-toolkit (a real OpenID provider,
## tests/fixtures/oidc/provider.py) with selenium for the sign-in test.
PYTHON ?= python3
test-clients: .venv-mcp1/ok .venv-mcp2/ok .venv-oidc/ok browser

.venv-mcp1/ok: tests/clients/requirements-mcp1.txt
	rm -rf .venv-mcp1 && $(PYTHON) -m venv .venv-mcp1
	.venv-mcp1/bin/pip install -q -r tests/clients/requirements-mcp1.txt
	touch $@

.venv-oidc/ok: tests/clients/requirements-oidc.txt
	rm -rf .venv-oidc && $(PYTHON) -m venv .venv-oidc
	.venv-oidc/bin/pip install -q -r tests/clients/requirements-oidc.txt
	touch $@

.venv-mcp2/ok: tests/clients/requirements-mcp2.txt
	rm -rf .venv-mcp2 && $(PYTHON) -m venv .venv-mcp2
	.venv-mcp2/bin/pip install -q -r tests/clients/requirements-mcp2.txt
	touch $@

browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	  apt-get install -y -qq chromium chromium-driver fonts-dejavu-core; fi

## The real box image (Claude Code on Debian); needs a reachable registry, not used by tests.
box-image:
	docker build -t llmbox-box:latest box/

## The release image: FROM scratch with only the static binary, as llmbox:$(VERSION) and
## llmbox:latest (docs/deploy.md has the docker run lines).
image: static
	@ctx=$$(mktemp -d) && cp $(STATIC_BIN) "$$ctx/llmbox" && cp deploy/Dockerfile "$$ctx/Dockerfile" && \
	  docker build -q --label org.opencontainers.image.version=$(VERSION) -t llmbox:$(VERSION) -t llmbox:latest "$$ctx" >/dev/null; \
	  rc=$$?; rm -rf "$$ctx"; [ $$rc -eq 0 ] && echo "built llmbox:$(VERSION) and llmbox:latest"; exit $$rc

## The release image users run anywhere: FROM scratch with only the static binary.
image-test: static
	bash tests/multihost/build-image.sh

## Hub and spokes as containers on private networks: partitions, crashes, revocation.
test-multihost: image-test test-image .venv-mcp1/ok
	cd tests/multihost && ../../.venv-mcp1/bin/python -m pytest -v -s -p no:cacheprovider test_multihost.py

## Fuzzing (fuzz/, its own workspace): libFuzzer targets for every parser that reads bytes from
## outside, built by cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it pass its
## -Z flags; no sanitizer: the crate has no unsafe code, and a panic or assertion is the finding).
## `fuzz-smoke` (part of `make test`) runs each target FUZZ_SECONDS from its seeds (fuzz/seeds)
## and the corpus grown so far (fuzz/corpus, not committed); any crash, hang (FUZZ_TIMEOUT s on
## one input) or leak fails it. `make fuzz-long` runs each FUZZ_LONG_SECONDS (600) instead.
FUZZ_TARGETS := duration flags state_file spoke_frame docker_response docker_stream id_token mcp http_front spoke_plane
FUZZ_SECONDS ?= 4
FUZZ_TIMEOUT ?= 30
FUZZ_LONG_SECONDS ?= 600
CARGO_FUZZ_VERSION := 0.13.2
FUZZ := cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz

cargo-fuzz:
	@$(CARGO) fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || \
	  $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)

fuzz-long:
	$(MAKE) fuzz-smoke FUZZ_SECONDS=$(FUZZ_LONG_SECONDS)

fuzz-smoke: cargo-fuzz
	$(FUZZ) build -s none
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  ( $(FUZZ) run -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	      -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 ) > fuzz/$$t.log 2>&1 \
	    || { tail -60 fuzz/$$t.log; echo "fuzz $$t: FAILED (fuzz/$$t.log, fuzz/artifacts/$$t)"; exit 1; }; \
	  grep -E '^#[0-9]+[[:space:]]+DONE' fuzz/$$t.log | tail -1; \
	done
