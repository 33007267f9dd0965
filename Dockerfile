# syntax=docker/dockerfile:1
# Archer: `archer serve` on the official (optimised) CPython image, as a non-root user.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY archer ./archer
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    ARCHER_PORT=8000
RUN useradd --create-home --uid 10001 archer
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels archer && rm -rf /wheels
WORKDIR /home/archer
COPY --chown=archer:archer config ./config
USER archer
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ARCHER_PORT', '8000')}/healthz\", timeout=2)"]
CMD ["archer", "serve", "--hypercorn-config", "config/hypercorn.toml"]
