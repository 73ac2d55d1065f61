"""deploy/: every kustomization renders and passes kubernetes-validate --strict, and the rendered
manifests say what the issue asks of them (probes, selectors, autoscaling, security, resources,
grace period, token, model volume, ingress limits, training Job, KServe). No cluster is needed;
the probes against a live gunicorn started with the Deployment's environment are in
tests/integration/test_deploy_probes.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from deploy_testkit import (
    BASE,
    DEPLOY,
    KSERVE,
    REPO,
    TRAIN,
    Doc,
    api_deployment_container,
    dockerfile_uid,
    environment,
    kinds,
    kserve_container,
    kustomizations,
    one,
    pod_specs,
    quantity_bytes,
    render,
)
from flask import Flask

from service.routes import access_of
from service.settings import Settings
from training.cli import NOT_PUBLISHED, build_parser

#: The oldest Kubernetes the manifests are for (the preStop sleep action is on by default from
#: 1.30), and the newest kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
#: Custom resources: kubernetes-validate has no schema for them (it only warns), so their
#: Kubernetes parts are validated as what they are (a pod's containers and volumes) below.
CUSTOM_KINDS = {"InferenceService", "ServingRuntime", "ServiceMonitor"}
#: InferenceService predictor fields that are KServe's own (ComponentExtensionSpec), not PodSpec's.
PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "model"}
#: Its model spec is a Container plus these.
MODEL_FIELDS = {"runtime", "modelFormat", "protocolVersion", "storageUri"}
APP_UID = dockerfile_uid(REPO / "Dockerfile", "APP_UID")


def _validate(doc: Doc) -> None:
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def _as_pod(name: str, spec: Doc) -> Doc:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _validate_custom(doc: Doc) -> None:
    """The parts of KServe's resources that are Kubernetes' own types, strictly."""
    name = doc["metadata"]["name"]
    if doc["kind"] == "ServingRuntime":
        spec = doc["spec"]
        _validate(_as_pod(name, {"containers": spec["containers"], "volumes": spec.get("volumes", [])}))
    elif doc["kind"] == "InferenceService":
        predictor = doc["spec"]["predictor"]
        model = {k: v for k, v in predictor["model"].items() if k not in MODEL_FIELDS}
        pod = {k: v for k, v in predictor.items() if k not in PREDICTOR_FIELDS}
        _validate(_as_pod(name, {**pod, "containers": [{"name": "kserve-container", **model}]}))


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_renders_and_validates_strictly(directory: Path) -> None:
    docs = render(directory)
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
            _validate_custom(doc)
        else:
            _validate(doc)  # a kind with no schema raises here: it must be added to CUSTOM_KINDS


def test_the_kustomizations_are_the_expected_ones() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in kustomizations()}
    assert {"kubernetes", "train", "finetune", "overlays/kserve", "overlays/prometheus-operator"} <= names


# --- the base: Deployment, Service, PDB, HPA, Ingress -------------------------------------
def test_the_deployment_has_replicas_and_probes() -> None:
    docs = render(BASE)
    deployment = one(docs, "Deployment", "digits-api")
    assert deployment["spec"]["replicas"] >= 2
    api = api_deployment_container(docs)
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    env = environment(docs, api)
    assert ports["http"] == int(env["PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] in (ports["http"], "http")
    assert env["HOST"] == "0.0.0.0"


def test_probe_and_metrics_paths_are_open_routes(app: Flask) -> None:
    """Kubelet and Prometheus send no token: the paths they use must not need one."""
    docs = render(BASE)
    api = api_deployment_container(docs)
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    paths = [api[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    paths += [annotations["prometheus.io/path"]]
    paths += [
        kserve_container(render(KSERVE))[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")
    ]
    urls = app.url_map.bind("localhost")
    for path in paths:
        endpoint, _ = urls.match(path, method="GET")
        assert access_of(app, endpoint) == "open", path


def test_prometheus_scrapes_the_api_port() -> None:
    docs = render(BASE)
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == int(
        environment(docs, api_deployment_container(docs))["PORT"]
    )


def test_service_and_pdb_select_the_deployment_pods() -> None:
    docs = render(BASE)
    deployment = one(docs, "Deployment", "digits-api")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service", "digits-api")
    pdb = one(docs, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    port_names = {p["name"] for p in api_deployment_container(docs)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_grpc_has_a_port_on_the_pod_the_service_and_kserves_runtime() -> None:
    """GRPC_PORT is the pod's `grpc` port, the Service's h2c port, and KServe's `h2c` port."""
    docs = render(BASE)
    api = api_deployment_container(docs)
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports["grpc"] == int(environment(docs, api)["GRPC_PORT"])
    service = one(docs, "Service", "digits-api")
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc_port["targetPort"], grpc_port["appProtocol"]) == ("grpc", "kubernetes.io/h2c")
    kserve_docs = render(KSERVE)
    kserve = kserve_container(kserve_docs)
    h2c = next(p for p in kserve["ports"] if p["name"] == "h2c")
    assert h2c["containerPort"] == int(environment(kserve_docs, kserve)["GRPC_PORT"])


def test_the_hpa_scales_the_deployment_on_cpu_from_two() -> None:
    docs = render(BASE)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "digits-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_the_ingress_buffers_and_caps_bodies_at_max_request_bytes() -> None:
    docs = render(BASE)
    ingress = one(docs, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    env = environment(docs, api_deployment_container(docs))
    cap = int(env.get("MAX_REQUEST_BYTES", Settings().max_request_bytes))
    assert quantity_bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) == cap
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "on"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > int(env["TIMEOUT"])
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_grace_period_covers_prestop_and_graceful_timeout() -> None:
    docs = render(BASE)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    api = api_deployment_container(docs)
    graceful = int(environment(docs, api)["GRACEFUL_TIMEOUT"])
    pause = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + graceful


def test_the_token_comes_from_a_secret_file() -> None:
    docs = render(BASE)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    api = api_deployment_container(docs)
    env = environment(docs, api)
    assert "AUTH_TOKEN" not in env
    token = Path(env["AUTH_TOKEN_FILE"])
    mount = next(m for m in api["volumeMounts"] if token.parent == Path(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["items"] == [{"key": "token", "path": token.name}]


def test_the_seed_init_container_fills_an_empty_store_once(tmp_path: Path) -> None:
    """Its script, run here on the repository's models/ and a temporary store in place of the
    image's /app/models and the volume's mount."""
    pod = one(render(BASE), "Deployment")["spec"]["template"]["spec"]
    (seed,) = pod["initContainers"]
    command, script = seed["command"][:-1], seed["command"][-1]
    assert command == ["python", "-c"]
    volume = next(m for m in seed["volumeMounts"] if m["name"] == "models")
    assert not volume.get("readOnly", False)
    mount = volume["mountPath"]
    store = tmp_path / "store"
    store.mkdir()
    (store / "fashion-mnist" / "1").mkdir(parents=True)  # a name already there, versioned
    script = script.replace('"/app/models"', repr(str(REPO / "models"))).replace(
        f'"{mount}"', repr(str(store))
    )

    def run() -> list[str]:
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)
        return sorted(p.name for p in store.iterdir())

    assert run() == ["fashion-mnist", "mnist.npz"]
    assert (store / "mnist.npz").read_bytes() == (REPO / "models" / "mnist.npz").read_bytes()
    before = (store / "mnist.npz").stat().st_mtime_ns
    assert run() == ["fashion-mnist", "mnist.npz"]  # nothing copied twice, no temporary left
    assert (store / "mnist.npz").stat().st_mtime_ns == before


def test_models_come_read_only_from_one_shared_volume() -> None:
    docs = render(BASE)
    pvc = one(docs, "PersistentVolumeClaim", "digits-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    api = api_deployment_container(docs)
    mount = next(m for m in api["volumeMounts"] if m["mountPath"] == environment(docs, api)["MODEL_DIR"])
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "digits-models"


def test_the_network_policy_lets_in_the_http_and_grpc_ports_only_and_nothing_out() -> None:
    docs = render(BASE)
    policy = one(docs, "NetworkPolicy", "digits-api")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]}
    ]
    assert policy["spec"]["egress"] == []
    assert {"http", "grpc"} <= {p["name"] for p in api_deployment_container(docs)["ports"]}
    # not the training Job's pods: it may download a data set
    job_labels = one(render(TRAIN), "Job")["spec"]["template"]["metadata"]["labels"]
    assert not policy["spec"]["podSelector"]["matchLabels"].items() <= job_labels.items()


# --- every pod: security and resources ----------------------------------------------------
def _all_pods() -> list[tuple[str, Doc]]:
    return [pod for directory in kustomizations() for pod in pod_specs(render(directory))]


def test_every_pod_runs_as_the_images_user_locked_down() -> None:
    pods = _all_pods()
    assert {"Deployment/digits-api", "Job/digits-train", "InferenceService/digits"} <= {n for n, _ in pods}
    for name, pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == context["runAsGroup"] == APP_UID, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for spec in pod["containers"] + pod.get("initContainers", []):
            container = spec["securityContext"]
            assert container["allowPrivilegeEscalation"] is False, (name, spec["name"])
            assert container["readOnlyRootFilesystem"] is True, (name, spec["name"])
            assert container["capabilities"] == {"drop": ["ALL"]}, (name, spec["name"])
            assert container.get("runAsUser", APP_UID) == APP_UID, (name, spec["name"])
            tag = spec["image"].rpartition(":")[2]
            assert tag and "/" not in tag and tag != "latest", (name, spec["image"])  # pinned


def test_every_container_requests_and_limits_cpu_and_memory() -> None:
    for name, pod in _all_pods():
        for spec in pod["containers"] + pod.get("initContainers", []):
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= spec["resources"][key].keys(), (name, spec["name"], key)


def test_the_proxy_image_runs_as_a_numeric_non_root_user() -> None:
    dockerfile = DEPLOY / "proxy" / "Dockerfile"
    uid = dockerfile_uid(dockerfile, "PROXY_UID")
    assert uid > 0
    assert "USER ${PROXY_UID}:${PROXY_UID}" in dockerfile.read_text()


# --- training -------------------------------------------------------------------------------
def test_the_training_job_publishes_into_the_shared_volume() -> None:
    docs = render(TRAIN)
    assert kinds(docs) == {"Job"}  # fine-tuning, once or nightly: deploy/finetune
    job = one(docs, "Job", "digits-train")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (train,) = pod["containers"]
    assert train["image"].startswith("digits-serving-train:")
    args = train["args"]
    assert args[0] == "train"
    published = Path(args[args.index("--publish") + 1])
    mount = next(m for m in train["volumeMounts"] if published.parent == Path(m["mountPath"]))
    assert not mount.get("readOnly", False)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == one(render(BASE), "PersistentVolumeClaim", "digits-models")["metadata"]["name"]
    )
    assert job["metadata"].get("namespace") == one(render(BASE), "Deployment")["metadata"]["namespace"]


def test_the_finetune_job_reads_images_read_only_and_publishes_a_new_name() -> None:
    """Issue 18: the served mnist fine-tuned on a mounted image folder, published as mnist-tuned."""
    docs = render(DEPLOY / "finetune")
    assert kinds(docs) == {"Job", "CronJob", "PersistentVolumeClaim"}
    pod = one(docs, "Job", "digits-finetune")["spec"]["template"]["spec"]
    (train,) = pod["containers"]
    args = train["args"]
    assert args[0] == "train"
    option = {
        name: args[args.index(name) + 1] for name in ("--images", "--init-from", "--replay", "--publish")
    }
    mounts = {m["mountPath"]: m for m in train["volumeMounts"]}
    assert mounts[option["--images"]]["readOnly"] is True
    assert Path(option["--init-from"]).parent == Path(option["--publish"]).parent
    assert not mounts[str(Path(option["--publish"]).parent)].get("readOnly", False)
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert (
        claims[mounts[option["--images"]]["name"]] == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    )
    assert claims["models"] == one(render(BASE), "PersistentVolumeClaim", "digits-models")["metadata"]["name"]
    assert option["--replay"] == "mnist" and Path(option["--publish"]).name != "mnist"


def _mounted(pod: Doc, container: Doc, path: Path) -> tuple[Doc, Doc]:
    """(the mount holding ``path``, its volume) of a container."""
    mount = max(
        (m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    return mount, next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_the_feedback_volume_is_written_by_the_api_and_read_by_the_nightly_finetune() -> None:
    docs = render(BASE)
    pvc = one(docs, "PersistentVolumeClaim", "digits-feedback")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica writes
    api = api_deployment_container(docs)
    env = environment(docs, api)
    feedback_dir = Path(env["FEEDBACK_DIR"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mount, volume = _mounted(pod, api, feedback_dir)
    assert Path(mount["mountPath"]) == feedback_dir and not mount.get("readOnly", False)
    assert volume["persistentVolumeClaim"]["claimName"] == "digits-feedback"
    settings = Settings(
        feedback_dir=feedback_dir,
        feedback_max_files=int(env["FEEDBACK_MAX_FILES"]),
        feedback_max_bytes=int(env["FEEDBACK_MAX_BYTES"]),
    )
    # the quota says "full" (507) before the volume does (503)
    assert settings.feedback_max_bytes < quantity_bytes(
        pvc["spec"]["resources"]["requests"]["storage"][:-2] + "g"
    )

    kserve_pod = {**one(render(KSERVE), "ServingRuntime")["spec"]}
    kserve_mount, kserve_volume = _mounted(kserve_pod, kserve_container(render(KSERVE)), feedback_dir)
    assert Path(kserve_mount["mountPath"]) == feedback_dir
    assert kserve_volume["persistentVolumeClaim"]["claimName"] == "digits-feedback"

    cron = one(render(DEPLOY / "finetune"), "CronJob", "digits-finetune-feedback")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # one publisher at a time
    assert cron["metadata"]["namespace"] == one(docs, "Deployment")["metadata"]["namespace"]
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_pod["restartPolicy"] == "Never"
    (train,) = job_pod["containers"]
    assert train["image"].startswith("digits-serving-train:")
    args = train["args"]

    def value(flag: str) -> str:
        return str(args[args.index(flag) + 1])

    assert args[0] == "train"
    images = Path(value("--images"))
    assert images == feedback_dir / env["DEFAULT_MODEL"]  # the corrections of the default model
    mount, volume = _mounted(job_pod, train, images)
    assert mount["readOnly"] is True and volume["persistentVolumeClaim"]["readOnly"] is True
    assert volume["persistentVolumeClaim"]["claimName"] == "digits-feedback"
    models = one(docs, "PersistentVolumeClaim", "digits-models")["metadata"]["name"]
    for flag in ("--init-from", "--publish"):
        mount, volume = _mounted(job_pod, train, Path(value(flag)))
        assert volume["persistentVolumeClaim"]["claimName"] == models, flag
    assert not _mounted(job_pod, train, Path(value("--publish")))[0].get("readOnly", False)
    assert value("--init-from") == "/app/models/mnist.npz"
    assert (value("--replay"), value("--seed")) == ("mnist", "0")
    assert "--publish-if-better" in args  # the evaluation gate
    # exit status 3 (the gate kept the served model) is a night that worked, not a failed Job
    assert train["command"] == ["tini", "-e", str(NOT_PUBLISHED), "--", "digits-train"]


def test_the_two_finetunes_share_their_arguments_and_differ_in_data_and_name() -> None:
    """deploy/finetune: the Job (your images -> mnist-tuned) and the nightly CronJob (the
    corrections -> mnist-feedback) are one recipe: same image, command, arguments, resources and
    security, apart from --images and --publish; every argument is one `train` accepts."""
    docs = render(DEPLOY / "finetune")
    job = one(docs, "Job", "digits-finetune")["spec"]["template"]["spec"]
    cron = one(docs, "CronJob", "digits-finetune-feedback")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (a,), (b,) = job["containers"], cron["containers"]
    for key in ("name", "image", "command", "resources", "securityContext"):
        assert a[key] == b[key], key
    assert job["securityContext"] == cron["securityContext"]

    def without_data(args: list[str]) -> list[str]:
        out = list(args)
        for flag in ("--images", "--publish"):
            i = out.index(flag)
            del out[i : i + 2]
        return out

    assert without_data(a["args"]) == without_data(b["args"])
    published = {Path(c["args"][c["args"].index("--publish") + 1]).name for c in (a, b)}
    assert published == {"mnist-tuned", "mnist-feedback"}
    for args in (a["args"], b["args"]):  # the training CLI parses them as they are
        parsed = build_parser().parse_args(args)
        assert parsed.publish_if_better and parsed.init_from == Path("/app/models/mnist.npz")


# --- KServe -------------------------------------------------------------------------------
def test_the_kserve_overlay_is_an_inference_service_on_the_same_image() -> None:
    docs = render(KSERVE)
    assert not kinds(docs) & {"Deployment", "Service", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy"}
    isvc = one(docs, "InferenceService", "digits")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert annotations["serving.kserve.io/metric"] == "cpu"
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] >= 2
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"] == "pvc://digits-models"
    runtime = one(docs, "ServingRuntime", predictor["model"]["runtime"])
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert predictor["model"]["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    kserve = kserve_container(docs)
    assert kserve["image"] == api_deployment_container(render(BASE))["image"]
    env = environment(docs, kserve)
    assert env["MODEL_DIR"] == "/mnt/models"  # where KServe puts storageUri
    assert int(env["PORT"]) == kserve["ports"][0]["containerPort"]
    pause = kserve["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert predictor["terminationGracePeriodSeconds"] > pause + int(env["GRACEFUL_TIMEOUT"])
    pod_labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == pod_labels


def test_the_kserve_objects_use_only_fields_kserve_defines() -> None:
    """Against the field names of KServe's own CRD schemas (tests/deploy/kserve_crd_fields.json,
    taken from the kserve repository; its source is in the file): a misspelt or invented field
    would be dropped by the API server without a word. The values inside pod and container
    fields are validated by Kubernetes' schemas in the first test."""
    fields = json.loads((Path(__file__).parent / "kserve_crd_fields.json").read_text())
    docs = render(KSERVE)
    isvc, known = one(docs, "InferenceService"), fields["InferenceService/v1beta1"]
    predictor = isvc["spec"]["predictor"]
    assert set(isvc["spec"]) <= set(known["spec"])
    assert set(predictor) <= set(known["spec.predictor"])
    assert set(predictor["model"]) <= set(known["spec.predictor.model"])
    assert set(predictor["model"]["modelFormat"]) <= set(known["spec.predictor.model.modelFormat"])
    assert predictor["scaleMetric"] in known["spec.predictor.scaleMetric enum"]
    runtime, known = one(docs, "ServingRuntime"), fields["ServingRuntime/v1alpha1"]
    assert set(runtime["spec"]) <= set(known["spec"])
    for model_format in runtime["spec"]["supportedModelFormats"]:
        assert set(model_format) <= set(known["spec.supportedModelFormats[]"])


def test_the_service_monitor_scrapes_the_service_port() -> None:
    docs = render(DEPLOY / "overlays" / "prometheus-operator")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "digits-api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # the HTTP port: /metrics is there (gRPC's numbers too), not on the gRPC port
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert "http" in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false"  # not scraped twice
