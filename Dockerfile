# syntax=docker/dockerfile:1
# Two images from one recipe (see docs/DOCKER.md):
#   docker build -t digits-api .                     the HTTP API with the shipped models (default)
#   docker build --target train -t digits-train .    the training CLI: docker run digits-train train ...
# The base is any Debian-based image with Python >= 3.11 and pip: --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.11-slim
# The images' user: numeric, so that `runAsNonRoot` checks and volume owners need no /etc/passwd
ARG APP_UID=10001

# --- builder: each image's virtualenv, installed from its lock file with every hash checked -------
# requirements/*.txt (`make lock`) pin every package with the sha256 of each file PyPI serves for
# it: pip installs the bootstrap lock (uv and the build backend) with --require-hashes, and uv
# installs an image's lock with --require-hashes, wheels only and nothing resolved (--no-deps): the
# same bytes on every build, and a file whose hash differs stops the build. uv trusts the base's
# certificate store, as pip does (UV_SYSTEM_CERTS), not only the bundle it was built with.
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1
WORKDIR /src
COPY requirements/bootstrap.txt requirements/
# binutils for strip; prune-venv takes out of a virtualenv what running it never reads:
# - build inputs some wheels carry (C/C++ sources and headers, Cython files): nothing compiles later;
# - numpy's test suite (12 MB with its .pyc), and type stubs (*.pyi: for type checkers, 1.5 MB);
# - Pillow's AVIF codec (5.3 MB): service/images.py opens PNG, JPEG, GIF, BMP and WebP alone, and
#   Pillow reports AVIF unsupported without it (PIL.features.check("avif") is False);
# - debug sections of the compiled extensions that have them (pysimdjson's: 6.5 MB of its 7.2 MB).
#   --strip-debug drops those sections alone; the code, symbols and auditwheel's RPATHs stay.
# (SC2016: the script's "$1" is meant for the script, not expanded here)
# hadolint ignore=DL3008,SC2016
RUN python -m pip install --require-hashes --only-binary :all: --requirement requirements/bootstrap.txt \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && printf '%s\n' '#!/bin/sh' 'set -eu' \
        'find "$1" -type f \( -name "*.c" -o -name "*.cpp" -o -name "*.h" -o -name "*.hpp" -o -name "*.pyx" -o -name "*.pxd" \) -delete' \
        'find "$1" -type d -path "*/site-packages/numpy/*" -name tests -prune -exec rm -rf {} +' \
        'find "$1" -type f \( -name "*.pyi" -o -path "*/PIL/_avif.*" -o -path "*/pillow.libs/libavif*" \) -delete' \
        'find "$1" -type f -name "*.so*" | while read -r f; do' \
        '  if readelf -S "$f" 2>/dev/null | grep -q "\.debug_info"; then strip --strip-debug "$f"; fi' \
        'done' > /usr/local/bin/prune-venv \
    && chmod +x /usr/local/bin/prune-venv

# The project's own wheel, built from the context (so it has no hash to check; installed --no-deps)
FROM builder AS wheel
COPY pyproject.toml README.md ./
COPY training/ training/
COPY service/ service/
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# One virtualenv per image: its lock first, so that a code change reuses that layer, then the
# project. The venv gets no pip of its own (uv installs into it); .pyc files are written now, since
# the images' PYTHONDONTWRITEBYTECODE keeps every worker from caching its own.
FROM builder AS venv-api
COPY requirements/serve.txt requirements/
RUN python -m venv --without-pip /opt/venv \
    && uv pip install --python /opt/venv/bin/python --require-hashes --only-binary :all: --no-deps \
        --compile-bytecode --requirement requirements/serve.txt \
    && prune-venv /opt/venv
COPY --from=wheel /wheels /wheels
RUN uv pip install --python /opt/venv/bin/python --no-deps --no-index --compile-bytecode /wheels/*.whl

FROM builder AS venv-train
COPY requirements/train.txt requirements/
RUN python -m venv --without-pip /opt/venv \
    && uv pip install --python /opt/venv/bin/python --require-hashes --only-binary :all: --no-deps \
        --compile-bytecode --requirement requirements/train.txt \
    && prune-venv /opt/venv
COPY --from=wheel /wheels /wheels
RUN uv pip install --python /opt/venv/bin/python --no-deps --no-index --compile-bytecode /wheels/*.whl

# --- slim: the base minus what running Python never reads ---------------------------------------
# What debian:*-slim leaves out (docs, man pages, translations; also for packages installed later),
# and the Debian packages of pip/setuptools/venv if the base has them: the runtime installs nothing
# with pip. Both are no-ops on python:3.11-slim, which is built that way already. Adds tini, the
# init process that runs as PID 1, passes signals on to its child and reaps zombies. (Stage
# `debian`, since apt still works in it; `slim`, below, takes apt out.)
# Debian versions are not pinned (DL3008): the pin would tie the image to one Debian release, and
# BASE_IMAGE decides which release that is; apt takes the base release's current version.
FROM ${BASE_IMAGE} AS debian
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

# Fashion-MNIST from Debian's package, for the train image (whose base has no apt left to install it)
FROM debian AS fashion-mnist
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null \
    && rm -rf /var/lib/apt/lists/*

# Then out goes what no Python process runs (39 MB on the bookworm stand-in; see docs/DOCKER.md):
# apt with the libraries only it uses (gnutls and its kin) and its keys, perl (Debian's maintainer
# scripts: nothing installs packages after this), e2fsprogs, the openssl command (libssl stays, and
# the CA certificates), Debian's lib2to3 and distutils (removed from Python itself in 3.12), and
# glibc's iconv modules (8 MB: Python has its own codecs; C.UTF-8 needs none). dpkg --purge keeps
# dpkg's database true, so that image scanners still see what is installed. Whichever of these a
# base does not have is skipped.
FROM debian AS slim
RUN set -- \
    && for pkg in apt libapt-pkg6.0 gpgv debian-archive-keyring libgnutls30 libp11-kit0 libtasn1-6 \
        libhogweed6 libnettle8 libidn2-0 libunistring2 perl-base e2fsprogs libext2fs2 libss2 logsave \
        openssl python3-lib2to3 python3-distutils; do \
        if [ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ]; then set -- "$@" "$pkg"; fi; \
    done \
    && if [ $# -gt 0 ]; then dpkg --purge --force-remove-essential --force-depends "$@" >/dev/null 2>&1; fi \
    && find /usr/lib -type d -name gconv -prune -exec find {} -name '*.so' -delete \; \
    && rm -rf /var/cache/debconf/* /var/log/dpkg.log /var/log/alternatives.log

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
COPY --from=fashion-mnist /usr/share/datasets/fashion-mnist/ /usr/share/datasets/fashion-mnist/
COPY --from=fashion-mnist /usr/share/doc/dataset-fashion-mnist/copyright /usr/share/doc/dataset-fashion-mnist/
RUN install -d -o app -g app /home/app/.cache /home/app/.cache/digits-serving "${DIGITS_DATA_CACHE}"
COPY --from=venv-train /opt/venv /opt/venv
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
COPY --from=venv-api /opt/venv /opt/venv
COPY gunicorn.conf.py ./
COPY --chown=${APP_UID}:${APP_UID} models/ /app/models/
USER ${APP_UID}:${APP_UID}
# All interfaces: the service's own default is 127.0.0.1, which no published port could reach
ENV HOST=0.0.0.0
EXPOSE 8000 8081
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
