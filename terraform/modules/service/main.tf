# ECS Fargate for fhirlake's processes: the gateway (`fhirlake serve`, behind an ALB) and the lake
# writer (`fhirlake writer`, issue 9). The data dir (journal, key store, audit trail, TLS and
# OAuth material) lives on an encrypted EFS file system until issue 9 moves the journal and the
# catalog to NATS JetStream and PostgreSQL.

locals {
  writer_health_port = 8081
  port               = 8443
  data_dir           = "/var/lib/fhirlake"
  mtls_port          = 8443

  common_environment = [
    { name = "FHIRLAKE_DATA_DIR", value = local.data_dir },
    { name = "FHIRLAKE_TENANT", value = var.tenant },
    { name = "FHIRLAKE_LOG_JSON", value = "true" },
    { name = "FHIRLAKE_SECURITY__KMS__PROVIDER", value = "aws-kms" },
    { name = "FHIRLAKE_SECURITY__KMS__AWS_REGION", value = var.region },
    { name = "FHIRLAKE_SECURITY__KMS__AWS_ALIAS_PREFIX", value = var.kms_alias_prefix },
    { name = "FHIRLAKE_AUDIT__WORM_BUCKET", value = var.audit_bucket_name },
    { name = "FHIRLAKE_AUDIT__WORM_REGION", value = var.region },
    { name = "FHIRLAKE_AUDIT__WORM_PREFIX", value = var.audit_prefix },
    { name = "FHIRLAKE_AUDIT__RETENTION_DAYS", value = tostring(var.audit_retention_days) },
    { name = "FHIRLAKE_SERVER__BASE_URL", value = var.base_url },
    # The ALB verifies EMR client certificates (mTLS listener) and forwards the leaf, URL-encoded,
    # in this header; the gateway accepts it only from the load balancer subnets and verifies it
    # against its own client CA again (security/tls.py).
    { name = "FHIRLAKE_TLS__CLIENT_CERT_HEADER", value = "X-Amzn-Mtls-Clientcert" },
    { name = "FHIRLAKE_TLS__TRUSTED_PROXIES", value = jsonencode(var.load_balancer_cidrs) },
    # The Iceberg warehouse in this region's lake bucket (data files, manifests, metadata).
    { name = "FHIRLAKE_DR__REGIONS__${upper(var.region_role)}__WAREHOUSE", value = "s3://${var.lake_bucket_name}/warehouse" },
    { name = "FHIRLAKE_DR__REGIONS__${upper(var.region_role)}__S3_REGION", value = var.region },
  ]

  secrets = [
    { name = "FHIRLAKE_AUTH__POLICY_DB_URL", valueFrom = aws_secretsmanager_secret.database_url.arn },
    # The Iceberg SqlCatalog lives in the same PostgreSQL database (its own iceberg_* tables).
    { name = "FHIRLAKE_DR__REGIONS__${upper(var.region_role)}__CATALOG_URL", valueFrom = aws_secretsmanager_secret.database_url.arn },
  ]

  log_options = {
    "awslogs-group"         = aws_cloudwatch_log_group.this.name
    "awslogs-region"        = var.region
    "awslogs-stream-prefix" = "fhirlake"
  }

  # Read-only root filesystem; the data dir on EFS and a task-local /tmp are the only writable paths.
  volume_mount = [
    { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
    { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
  ]
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/fhirlake/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:The value is the SQLAlchemy URL of the fhirlake database user, set by the operator; it is rotated with the user's password (docs/compliance/key-management.md), the RDS master password is rotated by RDS itself
  name                    = "${var.name}/database-url"
  description             = "postgresql+psycopg://… URL of the policy store and the Iceberg catalog. Value set by the operator, never by terraform."
  kms_key_id              = var.data_kms_key_arn
  recovery_window_in_days = 30
  tags                    = var.tags

  dynamic "replica" {
    for_each = var.secret_replica_region == null ? [] : [1]
    content {
      region     = var.secret_replica_region
      kms_key_id = var.secret_replica_kms_key_arn
    }
  }
}

# --- the data dir: EFS, encrypted at rest (KMS) and in transit (TLS mount) ---------------------

resource "aws_efs_file_system" "data" {
  encrypted        = true
  kms_key_id       = var.data_kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"
  tags             = merge(var.tags, { Name = "${var.name}-data" })
}

data "aws_iam_policy_document" "efs" {
  statement {
    sid       = "TaskRolesMountOverTls"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.data.arn]
    principals {
      type        = "AWS"
      identifiers = [var.gateway_role_arn, var.writer_role_arn]
    }
    condition {
      test     = "Bool"
      variable = "elasticfilesystem:AccessedViaMountTarget"
      values   = ["true"]
    }
  }

  statement {
    sid       = "DenyWithoutTls"
    effect    = "Deny"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess"]
    resources = [aws_efs_file_system.data.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_efs_file_system_policy" "data" {
  file_system_id = aws_efs_file_system.data.id
  policy         = data.aws_iam_policy_document.efs.json
}

resource "aws_efs_backup_policy" "data" {
  file_system_id = aws_efs_file_system.data.id
  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_efs_access_point" "data" {
  file_system_id = aws_efs_file_system.data.id
  posix_user {
    uid = 10001
    gid = 10001
  }
  root_directory {
    path = "/fhirlake"
    creation_info {
      owner_uid   = 10001
      owner_gid   = 10001
      permissions = "0700"
    }
  }
  tags = var.tags
}

resource "aws_security_group" "efs" {
  name        = "${var.name}-efs"
  description = "NFS from the fhirlake tasks only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "efs_from_tasks" {
  security_group_id            = aws_security_group.efs.id
  description                  = "NFS over TLS from the fhirlake tasks"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_efs_mount_target" "data" {
  count = length(var.private_subnet_ids)

  file_system_id  = aws_efs_file_system.data.id
  subnet_id       = var.private_subnet_ids[count.index]
  security_groups = [aws_security_group.efs.id]
}

# --- tasks ----------------------------------------------------------------------------------------

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "fhirlake tasks: HTTPS from the load balancer only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "HTTPS from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to the VPC endpoints (S3, KMS, Secrets Manager, ECR, logs)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "tasks_s3_gateway" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to S3 through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "tasks_postgres" {
  security_group_id = aws_security_group.tasks.id
  description       = "PostgreSQL inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "tasks_nfs" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "NFS to the data dir file system"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.efs.id
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = var.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${var.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.gateway_role_arn
  tags                     = var.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  volume {
    name = "data"
    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.data.id
      transit_encryption = "ENABLED"
      authorization_config {
        access_point_id = aws_efs_access_point.data.id
        iam             = "ENABLED"
      }
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "gateway"
      image                  = var.image
      essential              = true
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      command = [
        "fhirlake", "serve", "--host", "0.0.0.0", "--port", tostring(local.port),
        "--workers", tostring(var.gateway_workers), "--data-dir", local.data_dir,
      ]
      portMappings = [{ containerPort = local.port, protocol = "tcp" }]
      # With a writer service the gateways only journal; the writer task commits to Iceberg.
      environment = concat(local.common_environment, [
        { name = "FHIRLAKE_LAKE__WRITER_IN_GATEWAY", value = var.writer_max_count > 0 ? "false" : "true" },
      ])
      secrets     = local.secrets
      mountPoints = local.volume_mount
      # Liveness: /healthz answers while the process runs (gateway/app.py). The load balancer
      # uses /readyz, which is 503 while the KMS is unreachable, the audit trail fails or the
      # region is fenced (docs/degradation.md).
      healthCheck = {
        command     = ["CMD", "python", "-c", "import ssl,urllib.request as u; u.urlopen('https://127.0.0.1:${local.port}/healthz', context=ssl._create_unverified_context(), timeout=3)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
  ])
}

resource "aws_ecs_service" "gateway" {
  name                              = "gateway"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_min_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 90
  propagate_tags                    = "SERVICE"
  tags                              = var.tags

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = local.port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by autoscaling
  }

  depends_on = [aws_lb_listener.apps, aws_lb_listener.emr]
}

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.gateway_min_count
  max_capacity       = var.gateway_max_count
}

resource "aws_appautoscaling_policy" "gateway_cpu" {
  name               = "${var.name}-gateway-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = 60
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# The writer (`fhirlake writer`) drains the journal into Iceberg. One task: a single committer
# holds lake/writer.lock, so a second would only stand by. writer_max_count = 0 leaves committing
# to the gateway that holds the lock.
resource "aws_ecs_task_definition" "writer" {
  count = var.writer_max_count > 0 ? 1 : 0

  family                   = "${var.name}-writer"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.writer_cpu
  memory                   = var.writer_memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.writer_role_arn
  tags                     = var.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  volume {
    name = "data"
    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.data.id
      transit_encryption = "ENABLED"
      authorization_config {
        access_point_id = aws_efs_access_point.data.id
        iam             = "ENABLED"
      }
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "writer"
      image                  = var.image
      essential              = true
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      command = [
        "fhirlake", "writer", "--data-dir", local.data_dir,
        "--health-host", "127.0.0.1", "--health-port", tostring(local.writer_health_port),
      ]
      environment = local.common_environment
      secrets     = local.secrets
      mountPoints = local.volume_mount
      # /healthz on the writer's plain-HTTP health port, inside the task only (fhirlake/writer_cli.py);
      # SIGTERM on a deployment commits everything accepted before the task stops.
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:${local.writer_health_port}/healthz', timeout=3)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      stopTimeout      = 120
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
  ])
}

resource "aws_ecs_service" "writer" {
  count = var.writer_max_count > 0 ? 1 : 0

  name             = "writer"
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.writer[0].arn
  desired_count    = var.writer_max_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  propagate_tags   = "SERVICE"
  tags             = var.tags
  # Stop the old writer (it drains) before starting the new one: one committer at a time.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

}
