#!/usr/bin/env bash
# The container files, proved with podman (no Docker engine needed): lint the Dockerfile and the
# compose file; build both targets; run the API image (readiness, health check, a real prediction,
# no root process, graceful stop); run the train image for a short training run into a volume and
# load what it wrote, fine-tune the shipped mnist on a mounted image folder and score it on held-out
# images; check the Python packages in each image (exactly its SBOM, made from its lock;
# none of the test, lint or training-only ones in the API image); check the images' uid against
# the manifests' runAsUser; bring docker-compose.yml up with podman-compose, three API replicas
# behind the proxy, and check it from outside (.ci/compose_check.py: every replica serves, slow
# clients, a replica killed under load, the HTTP layer's hostile corpus, the proxy's own errors in JSON)
# and walk its documented workflow (train -> every replica serves the new model, no restart).
# Prints each step's wall time.
#
# Needs root and the shared podman set-up in ../shared/container/ beside the repository (which
# makes the base image locally: no registry is reached); without either it says so and exits 0.
# env: CT_WORK (podman's scratch dir, default /tmp/containertest/ci), CT_PORT (the first of three
#      host ports on 127.0.0.1, default 18080; the third is the proxy's gRPC port),
#      API_IMAGE_MAX_MB (size budget, default 200, gRPC included),
#      PROXY_IMAGE_MAX_MB (the proxy's, default 100), PYTHON (for .ci/compose_check.py, default
#      .venv/bin/python, else python3)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED="$REPO/../shared/container"
if [ ! -f "$SHARED/podman-env.sh" ]; then
  echo "containers: SKIPPED: no podman set-up at $SHARED (it sits beside the repository in CI)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "containers: SKIPPED: podman on this machine needs root; running as uid $(id -u)"
  exit 0
fi
cd "$REPO"

CT_WORK=${CT_WORK:-/tmp/containertest/ci}
API_PORT=${CT_PORT:-18080}          # the API image run on its own
COMPOSE_PORT=$((API_PORT + 1))      # the compose project's api service
MAX_MB=${API_IMAGE_MAX_MB:-200}
# never in the API image: test, lint and training-only packages (issue 21), checked in the built image
FORBIDDEN="pytest hypothesis schemathesis playwright kserve tritonclient ruff mypy bandit matplotlib torch
  scikit-learn kubernetes-validate tqdm pooch"
PROXY_MAX_MB=${PROXY_IMAGE_MAX_MB:-100}
API_REPLICAS=3
API_IMG=localhost/digits-serving-api:ci
TRAIN_IMG=localhost/digits-serving-train:ci
PROXY_IMG=localhost/digits-serving-proxy:ci
RUN_ID=digits-ci-$$                 # names this run's containers, volume and compose project
COMPOSE_VENV=$CT_WORK/podman-compose-1.6.0
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
TMP=$(mktemp -d)
SAMPLE=$REPO/tests/data/mnist-sample
UCI=$REPO/tests/data/uci-digits     # real digits from a source MNIST never showed (issue 18)
TIMES=()
CURRENT=start
PODMAN_READY=
COMPOSE_UP=
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

# --- helpers --------------------------------------------------------------------------------------
timed() {  # timed NAME CMD...: run CMD, record and print its wall time
  local t0=$EPOCHREALTIME dt
  CURRENT=$1; shift
  echo "== $CURRENT"
  "$@"
  dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  TIMES+=("$(printf '%-12s %6ss' "$CURRENT" "$dt")")
  echo "   ($CURRENT: ${dt}s)"
}

pm() {  # podman, without its complaint that no systemd runs health checks on a timer
  local rc=0    # (there is no systemd here: this script runs the health check itself)
  podman "$@" 2>"$TMP/podman.err" || rc=$?
  grep -v 'systemd' "$TMP/podman.err" >&2 || true
  return "$rc"
}

compose() {  # podman-compose on this run's project; output goes to a log shown on failure
  API_IMAGE=$API_IMG TRAIN_IMAGE=$TRAIN_IMG PROXY_IMAGE=$PROXY_IMG API_PORT=$COMPOSE_PORT \
    GRPC_API_PORT=$((COMPOSE_PORT + 1)) \
    timeout 300 "$COMPOSE_VENV/bin/podman-compose" -p "$RUN_ID" -f "$REPO/docker-compose.yml" "$@" \
    >>"$TMP/compose.log" 2>&1
}

wait_ready() {  # wait_ready PORT CONTAINER: GET /readyz answers 200 within 60 s
  local deadline=$((SECONDS + 60)) code=000
  while [ $SECONDS -lt $deadline ]; do
    code=$(curl -s --noproxy '*' -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true)
    [ "$code" = 200 ] && { echo "   GET /readyz: 200"; return 0; }
    [ "$(podman inspect -f '{{.State.Running}}' "$2" 2>/dev/null)" = true ] || break
    sleep 0.5
  done
  echo "   GET /readyz: $code, container $2 $(podman inspect -f '{{.State.Status}}' "$2" 2>/dev/null)"
  podman logs --tail 30 "$2" 2>&1 || true
  return 1
}

check_health() {  # check_health CONTAINER: the image's HEALTHCHECK passes
  local try
  for try in 1 2 3 4 5; do
    [ "$try" = 1 ] || sleep 1
    pm healthcheck run "$1" >/dev/null && { echo "   HEALTHCHECK: healthy"; return 0; }
  done
  echo "   HEALTHCHECK: unhealthy"
  return 1
}

check_predict() {  # check_predict PORT: POST /predict classifies real MNIST digits right
  python3 - "$1" "$SAMPLE" <<'EOF'
import gzip
import json
import sys
import urllib.request

port, sample, n = sys.argv[1], sys.argv[2], 20
with gzip.open(f"{sample}/t10k-images-idx3-ubyte.gz") as f:
    f.read(16)
    pixels = f.read(n * 784)
with gzip.open(f"{sample}/t10k-labels-idx1-ubyte.gz") as f:
    f.read(8)
    labels = list(f.read(n))
inputs = [[p / 255 for p in pixels[i * 784:(i + 1) * 784]] for i in range(n)]
request = urllib.request.Request(f"http://127.0.0.1:{port}/predict",
                                 data=json.dumps({"inputs": inputs}).encode(),
                                 headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = json.load(opener.open(request, timeout=10))
right = sum(p["label"] == t for p, t in zip(body["predictions"], labels, strict=True))
print(f"   POST /predict: {right}/{n} sample digits right ({body['model']} {body['version']})")
sys.exit(0 if right >= n - 2 else 1)
EOF
}

check_processes() {  # check_processes CONTAINER: nothing runs as root; PID 1 is tini, gunicorn its child
  local top line
  top=$(pm top "$1" user pid ppid args)
  while IFS= read -r line; do echo "   $line"; done <<<"$top"
  if awk 'NR > 1 && $1 == "root"' <<<"$top" | grep -q .; then
    echo "   a process runs as root"; return 1
  fi
  awk 'NR > 1 && $2 == 1 && $4 == "tini" { ok = 1 } END { exit !ok }' <<<"$top" \
    || { echo "   PID 1 is not tini"; return 1; }
  awk 'NR > 1 && $3 == 1 && /gunicorn/ { ok = 1 } END { exit !ok }' <<<"$top" \
    || { echo "   gunicorn is not PID 1's child"; return 1; }
  echo "   uid in the container: $(pm exec "$1" id -u)"
}

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    echo "containers: FAILED in step '$CURRENT' (exit status $rc)"
    [ -s "$TMP/compose.log" ] && { echo "--- podman-compose output (last 40 lines)"; tail -40 "$TMP/compose.log"; }
  fi
  if [ -n "$PODMAN_READY" ]; then
    pm rm -f -t 0 "$RUN_ID-api" >/dev/null 2>&1
    podman rm -f -t 0 "$RUN_ID-train" >/dev/null 2>&1
    podman volume rm -f "$RUN_ID-models" >/dev/null 2>&1
    [ -n "$COMPOSE_UP" ] && compose_down 5
    # build cache older than a day: keeps this machine's storage from growing run after run
    podman image prune -f --filter until=24h >/dev/null 2>&1
  fi
  rm -rf "$TMP"
  if [ ${#TIMES[@]} -gt 0 ]; then
    echo "== timings"
    printf '   %s\n' "${TIMES[@]}"
  fi
  [ "$rc" = 0 ] && echo "containers: OK"
  exit "$rc"
}
trap cleanup EXIT

# --- steps ----------------------------------------------------------------------------------------
setup() {
  # podman with this machine's adjustments, and the local base image (made once, ~70 s)
  # shellcheck source=/dev/null
  . "$SHARED/podman-env.sh"
  PODMAN_READY=1
  # the images' user (uid 10001) must be able to read the sample it gets mounted
  if find "$SAMPLE" -maxdepth 1 -type f ! -perm -o=r | grep -q .; then
    install -d -m 0755 "$TMP/mnist-sample"
    install -m 0644 "$SAMPLE"/*.gz "$TMP/mnist-sample/"
    SAMPLE=$TMP/mnist-sample
  fi
}

lint() {
  bash "$SHARED/lint.sh" Dockerfile docker-compose.yml 2>"$TMP/lint.err" \
    || { grep -v 'is ignored: it is neither' "$TMP/lint.err"; return 1; }
  # the proxy's Dockerfile (lint.sh checks a compose file too: the same one again, quickly)
  bash "$SHARED/lint.sh" deploy/proxy/Dockerfile docker-compose.yml 2>"$TMP/lint.err" \
    || { grep -v 'is ignored: it is neither' "$TMP/lint.err"; return 1; }
}

build() {  # build TARGET IMAGE [CONTEXT]
  timeout 900 podman build --pull=never --format docker --target "$1" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" -t "$2" "${3:-.}" >"$TMP/build-$1.log" 2>&1 \
    || { tail -40 "$TMP/build-$1.log"; return 1; }
  local size
  size=$(podman image inspect "$2" --format '{{.Size}}')
  echo "   $2: $((size / 1000000)) MB"
  if [ "$1" = api ] && [ "$size" -gt $((MAX_MB * 1000000)) ]; then
    echo "   the API image is over its budget of $MAX_MB MB"; return 1
  fi
  if [ "$1" = proxy ] && [ "$size" -gt $((PROXY_MAX_MB * 1000000)) ]; then
    echo "   the proxy image is over its budget of $PROXY_MAX_MB MB"; return 1
  fi
}

api_image() {
  local name=$RUN_ID-api t0
  pm run -d --name "$name" -p "127.0.0.1:$API_PORT:8000" "$API_IMG" >/dev/null
  wait_ready "$API_PORT" "$name"
  check_health "$name"
  check_predict "$API_PORT"
  check_processes "$name"
  # docker stop: SIGTERM, gunicorn drains and exits 0 well before the SIGKILL
  t0=$SECONDS
  pm stop -t 20 "$name" >/dev/null
  local status
  status=$(podman inspect -f '{{.State.ExitCode}}' "$name")
  echo "   stop: exit status $status after $((SECONDS - t0)) s"
  [ "$status" = 0 ] || { podman logs --tail 10 "$name"; return 1; }
  pm rm "$name" >/dev/null
}

train_image() {
  local vol=$RUN_ID-models out
  podman volume create "$vol" >/dev/null
  # a fresh volume at /app/models starts with the image's shipped models (as in docker-compose.yml)
  timeout 300 podman run --rm --name "$RUN_ID-train" -v "$SAMPLE:/data:ro" -v "$vol:/app/models" \
    "$TRAIN_IMG" train --dataset mnist --data-dir /data --epochs 2 --hidden-size 32 \
    --output mnist-sample.npz --no-progress | sed 's/^/   /'
  # the .npz it wrote loads (the CLI's validating loader) and beats chance on the sample
  out=$(timeout 120 podman run --rm -v "$SAMPLE:/data:ro" -v "$vol:/app/models:ro" "$TRAIN_IMG" \
    evaluate --model mnist-sample.npz --data-dir /data --json)
  echo "   $out"
  python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["accuracy"] < 0.5)' "$out"
  # fine-tuning on an image folder from a read-only mount (issue 18): the shipped mnist, with the
  # sample replayed, published as a new name into the volume, then scored on held-out images
  timeout 300 podman run --rm -v "$SAMPLE:/data:ro" -v "$UCI/train:/images:ro" -v "$vol:/app/models" \
    "$TRAIN_IMG" train --images /images --init-from /app/models/mnist.npz --replay mnist --data-dir /data \
    --epochs 5 --seed 0 --publish /app/models/mnist-tuned --no-progress | tail -2 | sed 's/^/   /'
  local model shipped tuned
  for model in mnist.npz mnist-tuned/1/model.npz; do
    out=$(timeout 120 podman run --rm -v "$UCI/held-out:/held-out:ro" -v "$vol:/app/models:ro" "$TRAIN_IMG" \
      evaluate --model "/app/models/$model" --images /held-out --json)
    echo "   $out"
    if [ "$model" = mnist.npz ]; then shipped=$out; else tuned=$out; fi
  done
  # the fine-tuned model beats the shipped one on the held-out images of the new source
  python3 -c 'import json, sys; a, b = (json.loads(x)["accuracy"] for x in sys.argv[1:]); sys.exit(b <= a)' \
    "$shipped" "$tuned"
  # Fashion-MNIST from the Debian package in the image, scored by the shipped model
  out=$(timeout 120 podman run --rm "$TRAIN_IMG" evaluate --model fashion-mnist.npz --no-download --json)
  echo "   $out"
  python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["count"] != 10000)' "$out"
  podman volume rm "$vol" >/dev/null
}

packages() {  # the images' Python packages: exactly their SBOMs (the locks); none forbidden in the API's
  local listing found=() pkg
  listing=$(pm run --rm --entrypoint python "$API_IMG" -c 'import importlib.metadata as m, re
print("\n".join(sorted({re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in m.distributions()})))')
  for pkg in $FORBIDDEN; do
    if grep -qx "$pkg" <<<"$listing"; then found+=("$pkg"); fi
  done
  echo "   API image: $(wc -l <<<"$listing") Python packages, none of the $(wc -w <<<"$FORBIDDEN") forbidden ones" \
       "${found[*]:+(FOUND: ${found[*]})}"
  [ ${#found[@]} -eq 0 ] || return 1
  CONTAINER=podman "$PYTHON" deploy/sbom.py write "$TMP/sbom" | sed 's/^/   /'
  CONTAINER=podman "$PYTHON" deploy/sbom.py verify "$API_IMG" "$TMP/sbom/api.cdx.json" | sed 's/^/   /'
  CONTAINER=podman "$PYTHON" deploy/sbom.py verify "$TRAIN_IMG" "$TMP/sbom/train.cdx.json" | sed 's/^/   /'
}

uids() {  # the images' own uid is the runAsUser of every pod in deploy/ (kubectl kustomize)
  local api train dir users
  api=$(pm run --rm --entrypoint id "$API_IMG" -u)
  train=$(pm run --rm --entrypoint id "$TRAIN_IMG" -u)
  echo "   uid: API image $api, train image $train, proxy image $(pm run --rm --entrypoint id "$PROXY_IMG" -u)"
  if ! command -v kubectl >/dev/null; then
    echo "   kubectl not installed: runAsUser not compared (tests/deploy checks it against the Dockerfile)"
    [ "$api" = "$train" ] && [ "$api" != 0 ]; return
  fi
  for dir in deploy/kubernetes deploy/train deploy/overlays/kserve; do
    users=$(kubectl kustomize "$dir" | awk '$1 == "runAsUser:" { print $2 }' | sort -u | tr '\n' ' ')
    echo "   $dir: runAsUser $users"
    [ "$users" = "$api " ] && [ "$users" = "$train " ] || { echo "   not the images' uid"; return 1; }
  done
}

project_containers() {  # project_containers [SERVICE]: this run's compose containers, by name
  podman ps -a --filter "label=io.podman.compose.project=$RUN_ID" \
    ${1:+--filter "label=com.docker.compose.service=$1"} --format '{{.Names}}' | sort
}

compose_down() {  # compose_down TIMEOUT: podman-compose 1.6.0's down leaves --scale'd replicas
  compose --profile train down -v -t "$1"
  local left
  left=$(project_containers)
  [ -z "$left" ] || podman rm -f -t 0 $left >/dev/null 2>&1
  podman volume rm -f "${RUN_ID}_models" "${RUN_ID}_datasets" >/dev/null 2>&1
  podman network rm -f "${RUN_ID}_default" >/dev/null 2>&1
  COMPOSE_UP=
}

compose_up() {
  if ! "$COMPOSE_VENV/bin/podman-compose" --version 2>/dev/null | grep -q 'podman-compose version 1.6.0'; then
    rm -rf "$COMPOSE_VENV"
    python3 -m venv "$COMPOSE_VENV"
    "$COMPOSE_VENV/bin/pip" install -q podman-compose==1.6.0 >"$TMP/pip.log" 2>&1 \
      || { tail -20 "$TMP/pip.log"; return 1; }
  fi
  COMPOSE_UP=1
  compose up -d --scale "api=$API_REPLICAS"
  local apis proxy name url=http://127.0.0.1:$COMPOSE_PORT
  apis=$(project_containers api)
  proxy=$(project_containers proxy)
  [ "$(wc -w <<<"$apis")" = "$API_REPLICAS" ] && [ -n "$proxy" ] \
    || { echo "   expected $API_REPLICAS api containers and a proxy: $(project_containers | tr '\n' ' ')"; return 1; }
  # `docker compose up` starts the API and the proxy: the train service sits behind its profile
  [ "$(project_containers | wc -l)" = $((API_REPLICAS + 1)) ] \
    || { echo "   more than the api and proxy services started"; return 1; }
  # the proxy is the only way in: no api replica publishes a port
  for name in $apis; do
    [ -z "$(podman port "$name")" ] || { echo "   $name publishes $(podman port "$name")"; return 1; }
  done
  echo "   $(tr '\n' ' ' <<<"$apis")behind $proxy ($(podman port "$proxy"))"
  wait_ready "$COMPOSE_PORT" "$proxy"
  for name in $apis $proxy; do check_health "$name"; done
  [ "$(pm exec "$proxy" id -u)" != 0 ] || { echo "   the proxy runs as root"; return 1; }
  check_predict "$COMPOSE_PORT"
  # the client's request id goes through to the replica and back; a body over MAX_REQUEST_BYTES
  # gets the proxy's 413 in the API's JSON shape
  local rid answer
  rid=$(curl -s --noproxy '*' -m 5 -D - -o /dev/null -H 'X-Request-ID: ci-proxy-1' "$url/healthz" \
    | tr -d '\r' | awk 'tolower($1) == "x-request-id:" { print $2 }')
  [ "$rid" = ci-proxy-1 ] || { echo "   X-Request-ID came back as '$rid'"; return 1; }
  answer=$(head -c $((16 * 1024 * 1024 + 1)) /dev/zero | curl -s --noproxy '*' -m 30 -w ' %{http_code}' \
    -H 'Content-Type: application/json' --data-binary @- "$url/predict")
  [ "${answer##* }" = 413 ] && grep -q '"payload_too_large"' <<<"$answer" \
    || { echo "   16 MiB + 1 byte: $answer"; return 1; }
  echo "   X-Request-ID passed through; 16 MiB + 1 byte: 413 from the proxy"
  # gRPC through the proxy's HTTP/2 port (grpc_pass): health, then real digits' labels
  "$PYTHON" .ci/compose_check.py grpc "127.0.0.1:$((COMPOSE_PORT + 1))"
  # 300 predicts, all answered, each replica served some (counted by its own /metrics)
  "$PYTHON" .ci/compose_check.py spread "$url" --containers "$(tr '\n' ',' <<<"$apis" | sed 's/,$//')"
  # 24 slow clients on the proxy: /healthz keeps answering within 2 s
  "$PYTHON" .ci/compose_check.py slow "$url" --clients 24 --seconds 10
  # the documented workflow: publish a version into the model volume, and the API serves it
  # without a restart (every worker of every replica polls the volume): wait until 10 answers
  # in a row, spread over the replicas by the proxy, list it
  # (podman-compose wants --profile for `run`; docker compose enables a service's profile itself)
  compose --profile train run --rm -T -v "$SAMPLE:/data:ro" train \
    train --dataset mnist --data-dir /data --epochs 1 --hidden-size 16 --publish compose-ci --no-progress
  local models="" tries=0 in_a_row=0
  while [ "$in_a_row" -lt 10 ]; do
    models=$(curl -s --noproxy '*' -m 5 "$url/readyz" || true)
    if grep -q '"compose-ci"' <<<"$models"; then in_a_row=$((in_a_row + 1)); else in_a_row=0; fi
    tries=$((tries + 1))
    [ "$tries" -le 120 ] || { echo "   the new model is not served: $models"; return 1; }
    sleep 0.25
  done
  echo "   after training, without a restart ($tries checks): $models"
  # the feedback loop's volume: a correction sent through the proxy is stored by a replica (as
  # the image's user) in the "feedback" volume, where the train service reads it (read-only)
  answer=$(curl -s --noproxy '*' -m 10 -w ' %{http_code}' -F image=@examples/digit-7.png -F label=2 \
    "$url/v1/models/mnist/feedback")
  [ "${answer##* }" = 201 ] || { echo "   feedback: $answer"; return 1; }
  local stored
  stored=$(timeout 60 podman run --rm --entrypoint find -v "${RUN_ID}_feedback:/feedback:ro" "$TRAIN_IMG" \
    /feedback/mnist -type f)
  [ "$stored" = "/feedback/mnist/2/$(sha256sum examples/digit-7.png | cut -d' ' -f1).png" ] \
    || { echo "   the train image sees in the feedback volume: '$stored'"; return 1; }
  echo "   a correction through the proxy: stored in the feedback volume, seen by train ($stored)"
  # one replica SIGKILLed while 4 clients send: at most 4 requests lost, then none
  "$PYTHON" .ci/compose_check.py kill "$url" --container "$(head -1 <<<"$apis")" --clients 4
  # what the proxy saw of it (its error log): requests cut or refused, each retried on another replica
  echo "   the proxy's log: $(podman logs "$proxy" 2>&1 | grep -c 'while .*upstream' || true) upstream errors," \
    "e.g. $(podman logs "$proxy" 2>&1 | grep -m1 -o '[a-z()]* failed ([^)]*)[^,]*\|upstream prematurely closed[^,]*' || true)"
  # the HTTP layer's hostile corpus through the proxy: nginx's own refusals in JSON, never a 5xx
  "$PYTHON" .ci/compose_check.py hostile "$url"
  # every replica stopped: the proxy's own 503 (or 504), in each route's JSON shape
  pm stop -t 5 $apis >/dev/null
  "$PYTHON" .ci/compose_check.py unavailable "$url"
  compose_down 20
}

timed setup setup
timed lint lint
timed build-api build api "$API_IMG"
timed build-train build train "$TRAIN_IMG"
timed build-proxy build proxy "$PROXY_IMG" deploy/proxy
timed api-image api_image
timed train-image train_image
timed packages packages
timed uids uids
timed compose compose_up
