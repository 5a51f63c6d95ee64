"""The Kustomize base says what the operations guide promises: sized, probed, locked-down pods,
one writer, a gateway that never commits to Iceberg, and settings the code actually reads."""

from __future__ import annotations

import copy
import typing
from typing import Any

import kubernetes_validate
import pytest
from pydantic import BaseModel, SecretStr

from fhirlake.settings import Settings
from tests.deploy.manifests import BASE, Manifest, containers, env_of, kustomization, manifests, named, of_kind, selects

KUBERNETES_VERSION = "1.30"

GATEWAY = "fhirlake-gateway"
WRITER = "fhirlake-writer"


def deployments() -> list[Manifest]:
    return of_kind("Deployment")


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def effective_security(deployment: Manifest, container: Manifest) -> dict[str, Any]:
    """The container's security context over the pod's, as the kubelet applies them."""
    pod = deployment["spec"]["template"]["spec"].get("securityContext", {})
    return {**pod, **container.get("securityContext", {})}


def test_every_file_in_the_base_is_listed_in_the_kustomization() -> None:
    on_disk = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk


def test_every_manifest_is_valid_against_the_kubernetes_schema() -> None:
    for doc in manifests():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    broken = copy.deepcopy(named("Deployment", GATEWAY))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_object_lands_in_the_fhirlake_namespace() -> None:
    assert kustomization()["namespace"] == "fhirlake"
    assert named("Namespace", "fhirlake")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_pod_gets_a_kubernetes_api_token() -> None:
    assert named("ServiceAccount", "fhirlake")["automountServiceAccountToken"] is False
    for deployment in deployments():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "fhirlake"
        assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", [GATEWAY, WRITER])
def test_every_container_has_requests_and_limits(name: str) -> None:
    for container in containers(named("Deployment", name)):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (name, bound)


@pytest.mark.parametrize("name", [GATEWAY, WRITER])
def test_containers_run_locked_down(name: str) -> None:
    deployment = named("Deployment", name)
    for container in containers(deployment):
        security = effective_security(deployment, container)
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "add" not in security["capabilities"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("name", [GATEWAY, WRITER])
def test_writable_paths_are_tmp_and_the_data_volume_only(name: str) -> None:
    spec = named("Deployment", name)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for container in spec["containers"]:
        writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert set(writable) == {"/tmp", "/var/lib/fhirlake"}
        assert "emptyDir" in writable["/tmp"]
        assert writable["/var/lib/fhirlake"]["persistentVolumeClaim"]["claimName"] == "fhirlake-data"


def test_the_shared_data_volume_is_read_write_many() -> None:
    assert named("PersistentVolumeClaim", "fhirlake-data")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_gateway_serves_https_on_8443_behind_a_service_on_443() -> None:
    deployment = named("Deployment", GATEWAY)
    (gateway,) = containers(deployment)
    args = gateway["args"]
    assert args[0] == "serve"
    assert args[args.index("--port") + 1] == "8443"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--data-dir") + 1] == "/var/lib/fhirlake"
    assert "--insecure-http" not in args
    (port,) = named("Service", GATEWAY)["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]}["https"] == 8443
    assert selects({"matchLabels": named("Service", GATEWAY)["spec"]["selector"]}, pod_labels(deployment))


def test_the_gateway_never_commits_to_iceberg() -> None:
    (gateway,) = containers(named("Deployment", GATEWAY))
    assert env_of(gateway)["FHIRLAKE_LAKE__WRITER_IN_GATEWAY"] == "false"


def test_the_gateway_has_all_three_probes_over_https() -> None:
    (gateway,) = containers(named("Deployment", GATEWAY))
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        get = gateway[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, "https", "HTTPS"), probe


def test_the_writer_probes_its_plain_http_health_port() -> None:
    (writer,) = containers(named("Deployment", WRITER))
    args = writer["args"]
    assert args[0] == "writer"
    assert args[args.index("--health-port") + 1] == "8081"
    assert {p["name"]: p["containerPort"] for p in writer["ports"]}["health"] == 8081
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        get = writer[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, "health", "HTTP"), probe


def test_the_tls_secret_is_mounted_read_only_where_the_settings_point() -> None:
    spec = named("Deployment", GATEWAY)["spec"]["template"]["spec"]
    (tls,) = [volume for volume in spec["volumes"] if volume.get("secret", {}).get("secretName") == "fhirlake-tls"]
    assert {item["key"] for item in tls["secret"]["items"]} == {"server.pem", "server.key", "ca.pem"}
    (gateway,) = spec["containers"]
    (mount,) = [m for m in gateway["volumeMounts"] if m["name"] == tls["name"]]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == "/etc/fhirlake/tls"
    env = env_of(gateway)
    assert env["FHIRLAKE_TLS__CERT_FILE"] == "/etc/fhirlake/tls/server.pem"
    assert env["FHIRLAKE_TLS__KEY_FILE"] == "/etc/fhirlake/tls/server.key"
    assert env["FHIRLAKE_TLS__CLIENT_CA_FILE"] == "/etc/fhirlake/tls/ca.pem"


def test_secrets_stay_out_of_the_config_map_and_the_environment() -> None:
    # A SecretStr setting may only arrive as a file from a mounted Secret (its *_FILE sibling).
    assert is_secret(field_annotation("FHIRLAKE_SECURITY__KMS__MASTER_KEY"))
    assert not [name for name in fhirlake_env_names() if is_secret(field_annotation(name))]
    for deployment in deployments():
        for container in containers(deployment):
            for var in container.get("env", []):
                assert "secretKeyRef" not in var.get("valueFrom", {}), var["name"]


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_the_gateway_sheds_load_at_about_80_percent_of_its_memory_limit() -> None:
    (gateway,) = containers(named("Deployment", GATEWAY))
    limit_mb = mebibytes(gateway["resources"]["limits"]["memory"])
    shed_mb = float(env_of(gateway)["FHIRLAKE_LIMITS__MAX_RSS_MB"])
    assert 0.75 * limit_mb <= shed_mb <= 0.85 * limit_mb
    assert shed_mb > 876.8  # the benchmark's peak RSS must not trip shedding


def test_the_gateway_drains_on_sigterm() -> None:
    assert named("Deployment", GATEWAY)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_the_writer_is_a_singleton() -> None:
    spec = named("Deployment", WRITER)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert not [hpa for hpa in of_kind("HorizontalPodAutoscaler") if hpa["spec"]["scaleTargetRef"]["name"] == WRITER]


def test_disruption_budgets_select_the_pods_they_protect() -> None:
    budgets = {pdb["metadata"]["name"]: pdb for pdb in of_kind("PodDisruptionBudget")}
    assert set(budgets) == {GATEWAY, WRITER}
    for name, pdb in budgets.items():
        assert selects(pdb["spec"]["selector"], pod_labels(named("Deployment", name)))
        others = [d for d in deployments() if d["metadata"]["name"] != name]
        assert not [d for d in others if selects(pdb["spec"]["selector"], pod_labels(d))], name
    assert budgets[GATEWAY]["spec"]["minAvailable"] == 1
    assert budgets[WRITER]["spec"]["maxUnavailable"] == 1


def test_the_autoscaler_scales_the_gateway_on_cpu_and_memory() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", GATEWAY)
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_network_policies_select_existing_pods() -> None:
    labels = [pod_labels(d) for d in deployments()]
    for policy in of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if selector:
            assert any(selects(selector, pod) for pod in labels), policy["metadata"]["name"]


def model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


_MISSING = object()


def field_annotation(env_name: str) -> Any:
    """The annotation of the field ``FHIRLAKE_A__B`` names (``Settings.a.b``), or ``_MISSING``.

    A dict section (``dr.regions``) takes a key, then the fields of its values."""
    parts = env_name.removeprefix("FHIRLAKE_").lower().split("__")
    model: type[BaseModel] | None = Settings
    annotation: Any = _MISSING
    while parts:
        if model is None or parts[0] not in model.model_fields:
            return _MISSING
        annotation = model.model_fields[parts.pop(0)].annotation
        if typing.get_origin(annotation) is dict and parts:
            parts.pop(0)  # the key, e.g. a region's name
            annotation = typing.get_args(annotation)[1]
        model = model_of(annotation) if parts else None
    return annotation


def resolves(env_name: str) -> bool:
    return field_annotation(env_name) is not _MISSING


def is_secret(annotation: Any) -> bool:
    return SecretStr in (annotation, *typing.get_args(annotation))


def fhirlake_env_names() -> set[str]:
    names = set(named("ConfigMap", "fhirlake-config")["data"])
    for deployment in deployments():
        for container in containers(deployment):
            names |= set(env_of(container))
    return {name for name in names if name.startswith("FHIRLAKE_")}


def test_the_settings_walk_tells_real_fields_from_typos() -> None:
    assert resolves("FHIRLAKE_SECURITY__KMS__PROVIDER")
    assert resolves("FHIRLAKE_DR__REGIONS__PRIMARY__WAREHOUSE")
    assert not resolves("FHIRLAKE_SECURITY__KMS__PROVIDR")
    assert not resolves("FHIRLAKE_DATA_DIR__X")


def test_every_fhirlake_variable_names_a_settings_field() -> None:
    unknown = {name for name in fhirlake_env_names() if not resolves(name)}
    assert not unknown
