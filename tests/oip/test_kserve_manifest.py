"""deploy/kserve/inferenceservice.yaml without a cluster: every field is one the KServe v1beta1
InferenceService CRD (and the core v1 PodSpec it embeds) documents, replicas are set, the model repository
is mounted where the server reads it, the served splits exist, and the args are ones our server parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"

# spec.predictor of serving.kserve.io/v1beta1: ComponentExtensionSpec + PodSpec + the model spec
# (https://kserve.github.io/website/ reference: PredictorSpec, ComponentExtensionSpec).
COMPONENT_EXTENSION = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
                       "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
                       "autoScaling"}
POD_SPEC = {"containers", "volumes", "nodeSelector", "serviceAccountName", "affinity", "tolerations",
            "imagePullSecrets", "securityContext", "initContainers", "priorityClassName", "runtimeClassName"}
PREDICTOR_FIELDS = COMPONENT_EXTENSION | POD_SPEC | {"model", "workerSpec"}
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "ports", "resources", "volumeMounts",
                    "readinessProbe", "livenessProbe", "startupProbe", "securityContext", "imagePullPolicy",
                    "workingDir"}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def docs():
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_inference_service_uses_documented_fields_only(docs):
    isvc = docs["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert DNS_1123.match(isvc["metadata"]["name"]) and len(isvc["metadata"]["name"]) <= 63
    assert set(isvc["spec"]) <= {"predictor", "transformer", "explainer"}
    pred = isvc["spec"]["predictor"]
    assert set(pred) <= PREDICTOR_FIELDS, set(pred) - PREDICTOR_FIELDS
    assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("RawDeployment", "Serverless")
    (container,) = pred["containers"]  # KServe runs exactly one predictor container
    assert container["name"] == "kserve-container"
    assert set(container) <= CONTAINER_FIELDS, set(container) - CONTAINER_FIELDS
    assert container["resources"]["requests"] and container["resources"]["limits"]


def _args(container) -> dict:
    out: dict = {}
    for a in container["args"]:
        key, _, value = a.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_model_repository_is_mounted_where_the_server_reads_it(docs):
    pred = docs["InferenceService"]["spec"]["predictor"]
    container = pred["containers"][0]
    args = _args(container)
    (mount,) = container["volumeMounts"]
    assert args["--models"] == [mount["mountPath"]]
    volume = {v["name"]: v for v in pred["volumes"]}[mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert container["command"][-1] == "splitinfer.server.oip_kserve"
    (port,) = container["ports"]  # one port: gRPC, named h2c so the mesh speaks HTTP/2
    assert port["name"] == "h2c" and args["--grpc_port"] == [str(port["containerPort"])]
    assert container["readinessProbe"]["httpGet"]["port"] == int(args["--http_port"][0])


def test_served_splits_exist_in_the_bundled_model():
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server import oip_core as core
    from splitinfer.server.model_repository import ModelRepository

    docs = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}
    args = _args(docs["InferenceService"]["spec"]["predictor"]["containers"][0])
    repo = ModelRepository(MODELS_DIR)
    for name in args["--split"]:
        model_id, rank = core.parse_model_name(name)
        assert repo.resolve_rank(model_id, rank) == rank
    assert args["--device"][0] in ("cpu", "gpu", "auto")
