# One image for the API and the worker (docker-compose.yml runs both).
#   docker build -t neural-entropy .                                   (CUDA build of torch)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t neural-entropy .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv

# torch first, pinned, from the index for the wanted build (CUDA by default; the worker needs it
# for the GPU, the API only imports it); the package's own range admits this version.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# dependencies (cached layer), then the code; an editable install keeps alembic.ini and
# migrations/ next to app/ where `python -m app.cli migrate` finds them
COPY pyproject.toml README.md ./
RUN mkdir -p app core models runner worker \
    && touch app/__init__.py core/__init__.py models/__init__.py runner/__init__.py worker/__init__.py \
    && pip install -e . && rm -rf app core models runner worker
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
COPY core ./core
COPY app ./app
COPY runner ./runner
COPY worker ./worker

RUN useradd --create-home --uid 10001 svc && mkdir -p /data/artifacts && chown -R svc /data
USER svc
ENV DATA_DIR=/data ARTIFACT_DIR=/data/artifacts HOST=0.0.0.0 PORT=8000
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
