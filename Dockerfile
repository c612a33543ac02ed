# One image for the API, the worker and the one-shot `orchestrator migrate` job.
#   docker build -t orchestrator .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user owns nothing but its home and the data dir.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
 && mkdir -p /data && chown app:app /data

WORKDIR /app

# CPU-only torch first, from the PyTorch CPU index: the default index pulls a multi-GB CUDA
# build. Separate layer, so code changes do not re-download it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Everything the package needs (tests/test_dockerfile.py replays these COPY lines into an empty
# directory, installs from it and imports every entry point from the install).
COPY pyproject.toml README.md* alembic.ini ./
COPY durable_orchestrator ./durable_orchestrator
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY planner ./planner
COPY memory ./memory
COPY worker.py ./
# The check runs outside /app, so it imports what was installed, not the copied sources. The
# processes run from /app, and PYTHONDONTWRITEBYTECODE keeps them from writing bytecode there:
# compiled here, or the workflow sandbox compiles the workflow modules on every workflow run.
RUN pip install . && python -m compileall -q /app \
 && cd / && python -c "import api.main, worker, durable_orchestrator.cli.main"

USER app
# The embedding model's ONNX export, made once here: containers then embed without importing
# torch, and do not each spend ~10 s of CPU exporting it at start (memory/onnx_model.py).
RUN cd / && python -c "from memory.embedder import Embedder; Embedder(backend='onnx').encode_sync(['export'])"
ENV ORCH_DATA_DIR=/data \
    LOG_LEVEL=INFO \
    ORCH_METRICS_BIND_HOST=0.0.0.0
EXPOSE 8000 9100 9101

# The API's liveness probe; the worker service overrides it with its metrics port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(os.environ.get('ORCH_HEALTHCHECK_URL','http://127.0.0.1:8000/healthz'), timeout=2)"

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20"]
