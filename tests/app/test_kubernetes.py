"""``deploy/kubernetes/``: valid objects, every setting wired, a grace that covers the drain.

No cluster runs in CI, so the manifests are checked offline: each object against the
Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships (strict: an unknown field is an
error), the kustomization against the files beside it, and the settings against
``.env.example`` — the names are read from that file at test time, so a setting added there
fails this test until the manifests wire it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from archer.call.session import SPOOL_TIMEOUT
from archer.errors import SettingsError
from archer.server import SHUTDOWN_GRACE
from archer.settings import REQUIRED_FOR_SERVING, Settings, default_drain_timeout

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the manifests promise to work on (a version kubernetes-validate
#: ships schemas for; every feature used is GA there).
KUBERNETES_VERSION = "1.33.0"
#: Settings that are secrets: in the Secret, never in the ConfigMap.
SECRETS = frozenset({"DATABASE_URL", "TWILIO_AUTH_TOKEN", "TWILIO_SHARED_KEYS", "CARTESIA_API_KEY"})
#: Settings Kubernetes fills in per pod (the downward API), not the ConfigMap.
PER_POD = {"INSTANCE_ID": "metadata.name"}

Manifest = dict[str, Any]


def documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> dict[tuple[str, str], Manifest]:
    """Every object, by (kind, name)."""
    found: dict[tuple[str, str], Manifest] = {}
    for path in manifest_files():
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def env_example_names() -> list[str]:
    """Every setting ``.env.example`` lists (``NAME=`` lines, commented out or not)."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)
    return sorted(set(names))


def config_data() -> dict[str, str]:
    data = objects()[("ConfigMap", "archer-config")]["data"]
    assert all(isinstance(value, str) for value in data.values())
    return dict(data)


def archer_container() -> Manifest:
    [container] = objects()[("Deployment", "archer")]["spec"]["template"]["spec"]["containers"]
    return dict(container)


#: What an operator fills in: the ConfigMap ships .env.example's placeholders, which Archer
#: refuses, so a deploy that forgot them stops with one line naming each.
OPERATOR_VALUES = {
    "WEBHOOK_BASE_URL": "https://voice.bank.test",
    "TWILIO_ACCOUNT_SID": "AC" + "0123456789abcdef" * 2,
}


def configured_settings() -> Settings:
    """The Settings the pods get: the ConfigMap as filled in, plus stand-ins for the secrets."""
    return Settings.from_environ(
        {
            **config_data(),
            **OPERATOR_VALUES,
            "DATABASE_URL": "postgresql+psycopg://archer:secret@db:5432/archer",
            "TWILIO_AUTH_TOKEN": "token",
            "CARTESIA_API_KEY": "key",
        }
    )


def test_the_configmaps_placeholders_are_refused_until_filled_in() -> None:
    """Applied as shipped, the pods refuse to serve, naming each placeholder."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(config_data(), requires=REQUIRED_FOR_SERVING)
    for name in OPERATOR_VALUES:
        assert any(
            name in problem and "placeholder" in problem for problem in refused.value.problems
        )


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_a_valid_kubernetes_object(path: Path) -> None:
    """Strict schema validation, offline, against the pinned Kubernetes version."""
    docs = documents(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """Sanity: a misspelt field and a wrong type both fail (so the test above can fail)."""
    deployment = objects()[("Deployment", "archer")]
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    """`kubectl apply -k` applies everything except the example Secret (never overwritten)."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text("utf-8"))
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(
        path.name for path in manifest_files() if path.name != "secret.example.yaml"
    )
    assert objects()[("Secret", "archer-secrets")]["kind"] == "Secret"


def test_every_env_example_setting_is_wired() -> None:
    """Each name in .env.example reaches the pods: the ConfigMap, the Secret, or the pod."""
    data = config_data()
    container = archer_container()
    secret_keys = set(objects()[("Secret", "archer-secrets")]["stringData"])
    env = {entry["name"]: entry for entry in container["env"]}
    assert container["envFrom"] == [{"configMapRef": {"name": "archer-config"}}]
    names = env_example_names()
    assert {"WEBHOOK_BASE_URL", "DRAIN_TIMEOUT", "MAX_ACTIVE_CALLS", "LOG_FORMAT"} <= set(names)
    unwired = []
    for name in names:
        if name in SECRETS:
            source = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
            if source != {"name": "archer-secrets", "key": name} or name not in secret_keys:
                unwired.append(name)
            assert name not in data, f"{name} is a secret: not in the ConfigMap"
        elif name in PER_POD:
            field = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {})
            if field.get("fieldPath") != PER_POD[name]:
                unwired.append(name)
        elif name not in data:
            unwired.append(name)
    assert unwired == [], "settings in .env.example that no manifest wires"
    # The few set on the container itself are the secrets and the per-pod ones, nothing else.
    assert set(env) <= SECRETS | set(PER_POD)


def test_the_configmap_is_settings_archer_accepts() -> None:
    """The values parse (a typo would stop every pod at start-up with exit status 2)."""
    settings = configured_settings()
    data = config_data()
    assert settings.port == int(data["ARCHER_PORT"])
    assert settings.media_port == int(data["MEDIA_PORT"])
    assert settings.workers == 1


def test_the_grace_period_covers_the_drain_and_the_drain_covers_the_longest_call() -> None:
    """SIGKILL never comes before the drain, the flush and the spool are done."""
    settings = configured_settings()
    pod = objects()[("Deployment", "archer")]["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = archer_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pause = float(pre_stop[1])
    needed = (
        pause
        + settings.drain_timeout
        + settings.limits.flush_timeout
        + SPOOL_TIMEOUT
        + SHUTDOWN_GRACE
    )
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < {needed}"
    # A call answered just before SIGTERM can run this long: the drain waits for it.
    assert settings.drain_timeout >= default_drain_timeout(settings.limits)


def test_the_deployment_probes_ports_and_security() -> None:
    container = archer_container()
    pod = objects()[("Deployment", "archer")]["spec"]["template"]["spec"]
    data = config_data()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": int(data["ARCHER_PORT"]), "media": int(data["MEDIA_PORT"])}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A Service named like the app would otherwise inject ARCHER_PORT=tcp://… into the pod.
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"]
    strategy = objects()[("Deployment", "archer")]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # a new pod is ready before an old one drains


def test_the_spool_is_on_the_shared_volume() -> None:
    """SPOOL_PATH is inside the mount of the ReadWriteMany claim, so it outlives any pod."""
    claim = objects()[("PersistentVolumeClaim", "archer-spool")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = objects()[("Deployment", "archer")]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == "archer-spool"
    [mount] = [m for m in archer_container()["volumeMounts"] if m["name"] == volume["name"]]
    spool = PurePosixPath(config_data()["SPOOL_PATH"])
    assert spool.is_relative_to(PurePosixPath(mount["mountPath"]))


def test_services_pdb_hpa_and_the_init_job_point_at_archer() -> None:
    found = objects()
    labels = found[("Deployment", "archer")]["spec"]["template"]["metadata"]["labels"]
    targets = {
        name: (svc["spec"]["selector"], svc["spec"]["ports"][0]["targetPort"])
        for (kind, name), svc in found.items()
        if kind == "Service"
    }
    assert targets == {"archer-http": (labels, "http"), "archer-media": (labels, "media")}
    assert found[("PodDisruptionBudget", "archer")]["spec"]["selector"]["matchLabels"] == labels
    hpa = found[("HorizontalPodAutoscaler", "archer")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "archer",
    }
    assert hpa["minReplicas"] >= 2  # a PodDisruptionBudget of one needs two
    [job_container] = found[("Job", "archer-db-init")]["spec"]["template"]["spec"]["containers"]
    assert shlex.join(job_container["args"]) == "archer db init"
    backends = {
        path["path"]: path["backend"]["service"]["name"]
        for rule in found[("Ingress", "archer")]["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"/twilio": "archer-http", "/ws/cartesia": "archer-media"}
