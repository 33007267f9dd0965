# syntax=docker/dockerfile:1
# Archer: `archer serve` on the official (optimised) CPython image, as a non-root user.
#
# Two stages: the build stage installs Archer's dependencies (all binary wheels) from the lock
# (requirements.lock, made by scripts/lock.sh) in a layer of their own, then Archer itself, into a
# virtualenv; the final stage copies only that virtualenv — no pip run, no source tree, no
# compilers. Everything Archer reads at run time (schema, demo bank, hypercorn defaults, tools)
# ships inside the package. The Python minor version and the Debian release are pinned; the patch
# level floats so a rebuild picks up security fixes. Pin a digest (python:3.12-slim-trixie@sha256:…)
# in the deploy pipeline when builds must be byte-for-byte reproducible. The official images are
# built with PGO and LTO (`--enable-optimizations --with-lto`), which the bridge's per-frame cost
# depends on; `archer bench` prints the flags of the interpreter it ran on.
ARG PYTHON_IMAGE=python:3.12-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/archer
WORKDIR /src
# Dependencies first, exactly as locked: a change to Archer's code does not reinstall them.
COPY requirements.lock ./
RUN /opt/archer/bin/pip install --no-cache-dir --requirement requirements.lock
# Then Archer, a regular (not editable) install without dependencies: the package data
# (schema.sql, tools.json, demo bank, hypercorn defaults, speech clips, emulator scripts) goes
# into site-packages with the code; `pip check` fails the build if the lock misses a dependency.
COPY pyproject.toml README.md LICENSE ./
COPY archer ./archer
RUN /opt/archer/bin/pip install --no-cache-dir --no-deps . \
    && /opt/archer/bin/pip check

FROM ${PYTHON_IMAGE}
# MEDIA_PORT: media streams on the dedicated listener too (measured cheaper, with a far lower p99,
# than the quart-trio route: README "Performance"). Route /ws/cartesia to 8001 at the load
# balancer; until it does, streams reach the route on 8000 and still work.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDIA_PORT=8001 \
    PATH=/opt/archer/bin:$PATH
RUN groupadd --gid 10001 archer \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/archer archer
COPY --from=build /opt/archer /opt/archer
WORKDIR /home/archer
# The working directory holds the SQLite default and the spool (spool/calls.jsonl); compose
# mounts a volume on spool/ so spooled records survive a new container.
RUN install -d -o 10001 -g 10001 /home/archer/spool
USER 10001:10001
# 8000: webhooks, health, metrics (and media via the route); 8001: the media listener.
EXPOSE 8000 8001
# Liveness on /healthz, on the port `archer serve` binds (ARCHER_PORT, then PORT, then 8000).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('ARCHER_PORT') or os.environ.get('PORT') or '8000'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# Exit status 2 is a configuration error (one line on stderr naming the setting): restarting
# cannot fix it, so compose.yaml gives up after a few tries (restart: on-failure:3).
CMD ["archer", "serve"]
