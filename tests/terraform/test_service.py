"""Compute runs what the code has: real commands, real settings, real health routes, mTLS at the ALB."""

from __future__ import annotations

import re
from typing import Any

from fhirlake.settings import Settings
from tests.terraform.hcl import ROOT, TERRAFORM, blocks, one

SERVICE = TERRAFORM / "modules" / "service"


def _task(name: str) -> dict[str, Any]:
    return next(b.body for b in blocks("resource", "aws_ecs_task_definition") if b.name == name)


def _settings_has(env_name: str) -> bool:
    """Whether FHIRLAKE_A__B__C names a field of the Settings object (pydantic-settings nesting)."""
    parts = env_name.removeprefix("FHIRLAKE_").lower().split("__")
    model: Any = Settings
    for part in parts:
        fields = model.model_fields
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_environment_variable_is_a_real_setting() -> None:
    text = (SERVICE / "main.tf").read_text()
    names = re.findall(r'name = "(FHIRLAKE_\w+)"', text)
    assert len(names) >= 10
    for name in names:
        assert _settings_has(name), f"{name} is not a fhirlake setting"


def test_gateway_runs_fhirlake_serve_and_is_checked_on_healthz() -> None:
    task = _task("gateway")
    text = str(task["container_definitions"])
    assert '"fhirlake", "serve"' in text and "--data-dir" in text
    assert "/healthz" in text
    routes = (ROOT / "gateway" / "app.py").read_text()
    assert '@app.get("/healthz")' in routes and '@app.get("/readyz")' in routes


def test_load_balancer_routes_only_to_ready_tasks() -> None:
    group = next(b.body for b in blocks("resource", "aws_lb_target_group"))
    check = one(group["health_check"])
    assert (check["path"], check["protocol"], check["matcher"]) == ("/readyz", "HTTPS", "200")
    assert group["protocol"] == "HTTPS"  # TLS from the ALB to the task too


def test_writer_service_runs_the_writer_command_as_a_singleton() -> None:
    writer = _task("writer")
    assert writer["count"] == "${var.writer_max_count > 0 ? 1 : 0}"
    cli = (ROOT / "fhirlake" / "cli.py").read_text()
    assert "writer_cli.register" in cli
    text = str(writer["container_definitions"])
    assert '"fhirlake", "writer"' in text and "--health-port" in text and "/healthz" in text
    service = next(b.body for b in blocks("resource", "aws_ecs_service") if b.name == "writer")
    # One committer at a time: the old task drains and stops before the new one starts.
    assert service["deployment_maximum_percent"] == 100 and service["deployment_minimum_healthy_percent"] == 0
    variables = [b for b in blocks("variable", under=TERRAFORM) if b.name == "writer_max_count"]
    assert variables and all("contains([0, 1]" in str(v.body["validation"]) for v in variables)
    gateway = str(_task("gateway")["container_definitions"])
    assert "FHIRLAKE_LAKE__WRITER_IN_GATEWAY" in gateway  # gateways stop committing when the writer runs


def test_services_autoscale() -> None:
    targets = {b.name for b in blocks("resource", "aws_appautoscaling_target")}
    policies = [b.body for b in blocks("resource", "aws_appautoscaling_policy")]
    assert targets == {"gateway"}  # the writer is a singleton
    assert all(p["policy_type"] == "TargetTrackingScaling" for p in policies)


def test_emr_listener_verifies_client_certificates_and_apps_cannot_forge_the_header() -> None:
    listeners = {b.name: b.body for b in blocks("resource", "aws_lb_listener")}
    mtls = one(listeners["emr"]["mutual_authentication"])
    assert mtls["mode"] == "verify" and mtls["trust_store_arn"] == "${aws_lb_trust_store.emr.arn}"
    assert mtls["ignore_client_certificate_expiry"] is False
    for listener in listeners.values():
        assert listener["protocol"] == "HTTPS"
        assert listener["ssl_policy"].startswith("ELBSecurityPolicy-TLS13-1-2")
    rule = next(b.body for b in blocks("resource", "aws_lb_listener_rule"))
    header = one(one(rule["condition"])["http_header"])
    assert header["http_header_name"] == "X-Amzn-Mtls-Clientcert" and rule["priority"] == 1
    text = (SERVICE / "main.tf").read_text()
    assert '{ name = "FHIRLAKE_TLS__CLIENT_CERT_HEADER", value = "X-Amzn-Mtls-Clientcert" }' in text


def test_data_dir_file_system_is_encrypted_at_rest_and_in_transit() -> None:
    efs = next(b.body for b in blocks("resource", "aws_efs_file_system"))
    assert efs["encrypted"] is True and efs["kms_key_id"] == "${var.data_kms_key_arn}"
    for name in ("gateway", "writer"):
        volume = next(v for v in _task(name)["volume"] if v["name"] == "data")
        assert one(volume["efs_volume_configuration"])["transit_encryption"] == "ENABLED"
    policy = next(b.body for b in blocks("data", "aws_iam_policy_document") if b.path.parent == SERVICE)
    deny = next(s for s in policy["statement"] if s.get("effect") == "Deny")
    assert one(deny["condition"])["variable"] == "aws:SecureTransport"


def test_database_password_and_url_live_in_secrets_manager() -> None:
    db = next(b.body for b in blocks("resource", "aws_db_instance"))
    assert "manage_master_user_password" in db and "password" not in db
    secret = next(b.body for b in blocks("resource", "aws_secretsmanager_secret"))
    assert secret["kms_key_id"] == "${var.data_kms_key_arn}"
    assert not list(blocks("resource", "aws_secretsmanager_secret_version")), "secret values never in terraform"
    assert "FHIRLAKE_AUTH__POLICY_DB_URL" in (SERVICE / "main.tf").read_text()


def test_tasks_use_the_lake_bucket_warehouse_and_the_postgresql_catalog() -> None:
    text = (SERVICE / "main.tf").read_text()
    assert (
        '"FHIRLAKE_DR__REGIONS__${upper(var.region_role)}__WAREHOUSE", value = "s3://${var.lake_bucket_name}/warehouse"'
        in text
    )
    catalog = (
        '"FHIRLAKE_DR__REGIONS__${upper(var.region_role)}__CATALOG_URL", '
        "valueFrom = aws_secretsmanager_secret.database_url.arn"
    )
    assert catalog in text  # from Secrets Manager, never a plain environment value
    from fhirlake.settings import RegionSettings

    assert {"warehouse", "s3_region", "catalog_url"} <= set(RegionSettings.model_fields)
    roots = {b.path.parent.name: b.body for b in blocks("module") if b.name == "service"}
    assert roots["primary"]["lake_bucket_name"] == "${local.lake_bucket}"
    assert roots["dr"]["region_role"] == "secondary"
