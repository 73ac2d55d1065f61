#!/usr/bin/env bash
# Writes the lock files from pyproject.toml (`make lock`), or checks that they still match it
# (`make lock-check`, in CI). Every package is pinned with the sha256 of each file PyPI serves for
# it, and pip installs them with --require-hashes:
#   bootstrap.txt  what pip installs first: uv (which installs the rest, fast) and the build
#                backend (pyproject's [build-system]) that builds the project itself
#   runtime.txt  [project] dependencies: the network and its weight files
#   serve.txt    runtime + [serve]: `make serve` and the API image
#   train.txt    runtime + [train]: the train image
#   dev.txt      runtime + [dev] (serve, train, plots, test, lint): `make test`, `make lint`, CI
# dev.txt is resolved first and the others within it, so a package has one version in every file
# and the tests run on exactly what the images ship. The bench extra is not locked (README.md).
#
# uv reads no pip.conf: the index is PyPI's, named here, whatever this machine's pip is set up with.
# Re-running keeps every pin that still satisfies pyproject.toml; `UPGRADE=1 make lock` (or
# UPGRADE=PACKAGE) moves to the newest versions.
# usage: requirements/lock.sh [--check]   env: UV (default .venv/bin/uv), UPGRADE
set -euo pipefail
cd "$(dirname "$0")/.."

UV=$(realpath "${UV:-.venv/bin/uv}")
INDEX=https://pypi.org/simple
OUT=requirements
CHECK=
[ "${1:-}" = --check ] && CHECK=1

# nothing from the environment may add an index, a find-links directory or a config file
unset UV_INDEX UV_INDEX_URL UV_DEFAULT_INDEX UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_CONFIG_FILE \
      UV_CONSTRAINT UV_OVERRIDE UV_BUILD_CONSTRAINT PIP_CONSTRAINT

upgrade=()
case "${UPGRADE:-}" in
  '') ;;
  1) upgrade=(--upgrade) ;;
  *) for p in ${UPGRADE//,/ }; do upgrade+=(--upgrade-package "$p"); done ;;
esac

REPO=$PWD
if [ -n "$CHECK" ]; then  # lock a copy, then compare: the same paths, so the same comments
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir "$work/$OUT"
  cp pyproject.toml "$work/"
  cp "$OUT"/*.txt "$work/$OUT/"
  cd "$work"
fi

compile() {  # compile NAME [uv pip compile args...]: resolve for every platform on Python >= 3.11
  local name=$1; shift
  "$UV" pip compile --quiet --no-config --index-url "$INDEX" --universal --python-version 3.11 \
    --generate-hashes --no-strip-extras --custom-compile-command 'make lock' \
    "${upgrade[@]}" "$@" --output-file "$OUT/$name.txt"
}

compile dev pyproject.toml --extra dev
compile runtime pyproject.toml --constraint "$OUT/dev.txt"
compile serve pyproject.toml --extra serve --constraint "$OUT/dev.txt"
compile train pyproject.toml --extra train --constraint "$OUT/dev.txt"
# uv's version is the one the dev extra pins
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"] + ["uv"]))' \
  | compile bootstrap - --constraint "$OUT/dev.txt"

if [ -n "$CHECK" ]; then
  status=0
  for lock in "$OUT"/*.txt; do diff -u "$REPO/$lock" "$lock" >>"$work/diff" 2>&1 || status=1; done
  if [ "$status" != 0 ]; then
    echo "lock-check: requirements/*.txt do not match pyproject.toml; run \`make lock\` and commit both:"
    head -40 "$work/diff"
    exit 1
  fi
  echo "lock-check: requirements/*.txt match pyproject.toml"
fi
