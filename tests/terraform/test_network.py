"""Private subnets with VPC endpoints for S3 and KMS; the database is encrypted, multi-AZ and private."""

from __future__ import annotations

from tests.terraform.hcl import TERRAFORM, blocks, one

NETWORK = TERRAFORM / "modules" / "network"


def test_s3_gateway_endpoint_and_kms_interface_endpoint() -> None:
    s3 = next(b.body for b in blocks("resource", "aws_vpc_endpoint") if b.name == "s3")
    assert s3["vpc_endpoint_type"] == "Gateway" and s3["service_name"].endswith(".s3")
    interface = next(b.body for b in blocks("resource", "aws_vpc_endpoint") if b.name == "interface")
    assert interface["private_dns_enabled"] is True
    endpoints = (NETWORK / "main.tf").read_text().split("interface_endpoints = [", 1)[1].split("]", 1)[0]
    for service in ("kms", "secretsmanager", "logs", "ecr.api", "ecr.dkr"):
        assert f'"{service}"' in endpoints


def test_tasks_and_database_live_in_private_subnets_without_internet_route() -> None:
    subnets = {b.name: b.body for b in blocks("resource", "aws_subnet")}
    assert subnets["private"]["map_public_ip_on_launch"] is False
    assert not list(blocks("resource", "aws_nat_gateway"))
    routes = [b.body for b in blocks("resource", "aws_route")]
    assert all(r["route_table_id"] != "${aws_route_table.private.id}" for r in routes)
    services = [b.body for b in blocks("resource", "aws_ecs_service")]
    for service in services:
        config = one(service["network_configuration"])
        assert config["assign_public_ip"] is False and config["subnets"] == "${var.private_subnet_ids}"


def test_database_is_encrypted_multi_az_private_tls_only_with_iam_auth() -> None:
    db = next(b.body for b in blocks("resource", "aws_db_instance"))
    assert db["storage_encrypted"] is True and db["kms_key_id"] == "${var.kms_key_arn}"
    assert db["multi_az"] is True and db["publicly_accessible"] is False
    assert db["iam_database_authentication_enabled"] is True
    assert db["deletion_protection"] is True and db["backup_retention_period"] == "${var.backup_retention_days}"
    params = {
        p["name"]: p["value"] for p in next(b.body for b in blocks("resource", "aws_db_parameter_group"))["parameter"]
    }
    assert params["rds.force_ssl"] == "1"


def test_flow_logs_and_default_security_group_closed() -> None:
    assert next(blocks("resource", "aws_flow_log")).body["traffic_type"] == "ALL"
    default = next(blocks("resource", "aws_default_security_group")).body
    assert "ingress" not in default and "egress" not in default
