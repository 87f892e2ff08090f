# syntax=docker/dockerfile:1
# trine gateway. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t trine-gateway .
# The gateway is pure Go (its SQLite driver included), so it runs on distroless/static.

FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY gateway/go.mod gateway/go.sum gateway/
RUN cd gateway && go mod download
COPY gateway/ gateway/
COPY deploy/launcher/ deploy/launcher/
RUN cd gateway && go build -ldflags='-s -w' -o /out/trine-gateway ./cmd/trine-gateway \
 && cd ../deploy/launcher && go build -ldflags='-s -w' -o /out/trine-launch . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/trine-gateway /out/trine-launch /usr/local/bin/
# Writable only for the SQLite job queue of a single-gateway setup; with REDIS_URL it stays empty.
COPY --from=build --chown=65532:65532 /out/data /var/lib/trine
WORKDIR /var/lib/trine
ENV TRINE_GATEWAY_ADDR=0.0.0.0:8080 \
    TRINE_JOBS_SQLITE_PATH=/var/lib/trine/jobs.sqlite3 \
    TRINE_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/trine-launch", "health"]
# trine-launch turns TRINE_INTERNAL_TOKEN_FILE (a Docker secret) into TRINE_INTERNAL_TOKEN, then
# execs the gateway, which stays PID 1 and so gets SIGTERM and SIGHUP (keys reload) itself.
ENTRYPOINT ["/usr/local/bin/trine-launch", "exec", "--", "/usr/local/bin/trine-gateway"]
