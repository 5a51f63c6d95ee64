# The load balancer: HTTPS for clinical apps on 443, mutual TLS for EMR integrations on 8443
# (client certificates verified against the trust store, i.e. fhirlake's client CA).

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "HTTPS from the allowed client ranges to the fhirlake load balancer"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "alb_apps" {
  for_each = toset(var.app_client_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clinical apps"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_emr" {
  for_each = toset(var.emr_client_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "mTLS from EMR integration engines"
  ip_protocol       = "tcp"
  from_port         = local.mtls_port
  to_port           = local.mtls_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "HTTPS to the fhirlake tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:A WAF web ACL is the deploying organization's choice (rules, vendor); attach it with var.web_acl_arn
  #checkov:skip=CKV_AWS_91:Every request is recorded in fhirlake's hash-chained audit trail before it is answered; ALB access logs need an SSE-S3 bucket, which the all-SSE-KMS rule excludes (opt in with var.access_log_bucket_name)
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = var.internal
  subnets                    = var.internal ? var.private_subnet_ids : var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  desync_mitigation_mode     = "strictest"
  tags                       = var.tags

  dynamic "access_logs" {
    for_each = var.access_log_bucket_name == null ? [] : [1]
    content {
      bucket  = var.access_log_bucket_name
      prefix  = "alb/${var.name}"
      enabled = true
    }
  }
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "gateway" {
  name                 = "${var.name}-gateway"
  port                 = local.port
  protocol             = "HTTPS"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 35 # the gateway drains for up to 30 s on SIGTERM
  tags                 = var.tags

  # Readiness: /readyz is 503 while the KMS circuit is open or the lake writer's flush fails.
  health_check {
    path                = "/readyz"
    protocol            = "HTTPS"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_trust_store" "emr" {
  name                             = "${var.name}-emr-clients"
  ca_certificates_bundle_s3_bucket = var.trust_store_bucket
  ca_certificates_bundle_s3_key    = var.trust_store_key
  tags                             = var.tags
}

resource "aws_lb_listener" "apps" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# On the listener without mTLS a client could send its own certificate header: refuse it.
resource "aws_lb_listener_rule" "apps_no_forged_cert_header" {
  listener_arn = aws_lb_listener.apps.arn
  priority     = 1

  condition {
    http_header {
      http_header_name = "X-Amzn-Mtls-Clientcert"
      values           = ["*"]
    }
  }

  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/fhir+json"
      status_code  = "400"
      message_body = "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"security\",\"diagnostics\":\"client certificates are accepted on the mTLS port only\"}]}"
    }
  }
}

resource "aws_lb_listener" "emr" {
  load_balancer_arn = aws_lb.this.arn
  port              = local.mtls_port
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  mutual_authentication {
    mode                             = "verify"
    trust_store_arn                  = aws_lb_trust_store.emr.arn
    ignore_client_certificate_expiry = false
  }

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}
