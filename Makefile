# llmbox — build, test, run. `make test` is the one command CI runs (via .ci/run).
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/llmbox

.PHONY: build test lint unit run static bench-cluster bench-docker bench-scale test-multihost box-image test-image

build:
	$(CARGO) build --release

## Everything: formatting, lints, unit and integration tests (real Docker), the slow suites.
test: lint test-image
	$(CARGO) test --all-targets -- --test-threads=4
	@echo "make test: all suites passed"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## The test box image (busybox rootfs, docker import); needs Debian's busybox-static.
test-image:
	bash tests/fixtures/build-test-image.sh

## Docker box manager vs the docker CLI: p50 of create->URL, exec, destroy (prints a table).
## LTO is off for this bench build only: the time measured is the daemon's and the socket's.
bench-docker: test-image
	CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 $(CARGO) bench --bench docker

## Build and start the hub with its defaults.
run: build
	./target/release/llmbox hub

## Cluster benchmark: verb round trip, throughput and idle-spoke RSS vs a bare tungstenite echo.
bench-cluster:
	$(CARGO) bench --bench cluster

## Scale benchmark: one `llmbox hub` process and 100/1000/5000 spokes (RSS, threads, idle CPU,
## MCP round trips, reconnect after a hub kill) beside a bare tungstenite echo. Prints, asserts nothing.
## LTO off for this bench build only (build time on 2 cores); opt-level stays 3.
bench-scale:
	CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 $(CARGO) bench --bench scale

## Stripped static musl binary.
static:
	$(CARGO) build --release --target $(MUSL_TARGET)
	@file $(STATIC_BIN)
	@ls -l $(STATIC_BIN) | awk '{print "size:", $$5, "bytes"}'
