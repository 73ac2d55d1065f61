# syntax=docker/dockerfile:1
# Two images from one recipe (see docs/DOCKER.md):
#   docker build -t digits-api .                     the HTTP API with the shipped models (default)
#   docker build --target train -t digits-train .    the training CLI: docker run digits-train train ...
# The base is any Debian-based image with Python >= 3.11 and pip: --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.11-slim
# The images' user: numeric, so that `runAsNonRoot` checks and volume owners need no /etc/passwd
ARG APP_UID=10001

# --- builder: wheels for the project and its dependencies, installed into /opt/venv --------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a change to the code reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
open('requirements.txt', 'w').write('\n'.join(p['project']['dependencies'])); \
open('build-requirements.txt', 'w').write('\n'.join(p['build-system']['requires']))" \
    && python -m pip install --requirement build-requirements.txt \
    && python -m pip wheel --wheel-dir /wheels --requirement requirements.txt
COPY README.md ./
COPY training/ training/
COPY service/ service/
# The venv gets no pip of its own: the builder's pip installs into it (--python). Then out go the
# build inputs some wheels carry (pysimdjson: 7.6 MB of C++ sources): no compiler runs after this.
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        /wheels/digits_serving-*.whl \
    && find /opt/venv -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \
        -o -name '*.pyx' -o -name '*.pxd' \) -delete

# --- slim: the base minus what running Python never reads ---------------------------------------
# What debian:*-slim leaves out (docs, man pages, translations; also for packages installed later),
# and the Debian packages of pip/setuptools/venv if the base has them: the runtime installs nothing
# with pip. Both are no-ops on python:3.11-slim, which is built that way already. Adds tini, the
# init process that runs as PID 1, passes signals on to its child and reaps zombies.
# Debian versions are not pinned (DL3008): the pin would tie the image to one Debian release, and
# BASE_IMAGE decides which release that is; apt takes the base release's current version.
FROM ${BASE_IMAGE} AS slim
# hadolint ignore=DL3008
RUN printf 'path-exclude %s\n' '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' \
        '/usr/share/groff/*' '/usr/share/lintian/*' '/usr/share/locale/*' > /etc/dpkg/dpkg.cfg.d/slim \
    && printf 'path-include %s\n' '/usr/share/doc/*/copyright' '/usr/share/locale/locale.alias' \
        >> /etc/dpkg/dpkg.cfg.d/slim \
    && if dpkg-query --show python3-pip >/dev/null 2>&1; then \
        apt-get purge -y -qq python3-pip python3-pip-whl python3-setuptools python3-setuptools-whl \
            python3-pkg-resources python3-wheel >/dev/null; fi \
    && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends tini >/dev/null \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && find /usr/share/doc -mindepth 1 -not -type d -not -name copyright -delete \
    && find /usr/share/doc -mindepth 1 -type d -empty -delete \
    && find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + \
    && rm -rf /usr/share/man/* /usr/share/info/* /usr/share/groff/* /usr/share/lintian/* \
        /var/cache/debconf/*-old /var/log/apt/* /var/log/dpkg.log

# --- runtime: what both images share; a non-root user with a home directory ----------------------
# A later layer cannot make an earlier one smaller, so the trimmed tree is copied whole onto scratch
# (DL3067 warns about copying a whole filesystem: here that is the point). It is one layer, shared
# by both images: 126 MB on the Debian bookworm stand-in base whose layers are 199 MB.
FROM scratch AS runtime
# hadolint ignore=DL3067
COPY --from=slim / /
ENV LANG=C.UTF-8 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/app/models
ARG APP_UID
RUN groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && install -d -o app -g app /app/models /feedback
LABEL org.opencontainers.image.licenses="MIT"
WORKDIR /app

# --- train: `docker run IMAGE train --dataset fashion-mnist ...` ---------------------------------
FROM runtime AS train
ARG APP_UID
# Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist); MNIST from a mounted --data-dir
# or a download from the official mirrors into $DIGITS_DATA_CACHE (a volume in docker-compose.yml).
ENV DIGITS_DATA_CACHE=/home/app/.cache/digits-serving/datasets
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
    && install -d -o app -g app /home/app/.cache /home/app/.cache/digits-serving "${DIGITS_DATA_CACHE}"
COPY --from=builder /opt/venv /opt/venv
# The shipped models as well: whichever service first mounts the compose file's empty model volume
# fills it with them. `train` writes DATASET.npz into the working directory, beside them, or with
# --publish NAME the next version NAME/<N>/model.npz.
COPY --chown=${APP_UID}:${APP_UID} models/ /app/models/
USER ${APP_UID}:${APP_UID}
WORKDIR /app/models
ARG BASE_IMAGE
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="digits-serving-train" \
      org.opencontainers.image.description="Trains a TwoLayerNet on MNIST or Fashion-MNIST and exports it as .npz" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
ENTRYPOINT ["tini", "--", "digits-train"]
CMD ["--help"]

# --- api (the default target): gunicorn serving the shipped models on port 8000 ------------------
FROM runtime AS api
ARG APP_UID
COPY --from=builder /opt/venv /opt/venv
COPY gunicorn.conf.py ./
COPY --chown=${APP_UID}:${APP_UID} models/ /app/models/
USER ${APP_UID}:${APP_UID}
# All interfaces: the service's own default is 127.0.0.1, which no published port could reach
ENV HOST=0.0.0.0
EXPOSE 8000
# Ready = a valid default model is loaded. Python, since the image has no curl; no proxy for loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]
ARG BASE_IMAGE
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="digits-serving-api" \
      org.opencontainers.image.description="HTTP API serving TwoLayerNet classifiers for MNIST and Fashion-MNIST" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Exec form, no shell in between: tini (PID 1) passes `docker stop`'s SIGTERM to gunicorn, its
# child, which stops accepting and drains requests for up to GRACEFUL_TIMEOUT seconds.
ENTRYPOINT ["tini", "--"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "service.wsgi:app"]
