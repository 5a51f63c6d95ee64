# CloudWatch alarms on what would break fhirlake's promises: replication falling behind the RPO,
# a rising error rate, the audit sink failing (then the gateway answers 503: no record, no answer)
# and unhealthy gateway targets. Notifications go to an encrypted SNS topic.

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# S3 Replication Time Control publishes the latency of every replicated object per rule.
resource "aws_cloudwatch_metric_alarm" "replication_lag" {
  for_each = var.replication_rules

  alarm_name          = "${var.name}-replication-lag-${each.key}"
  alarm_description   = "Objects of ${each.key} take longer than the RPO target to reach the DR region."
  namespace           = "AWS/S3"
  metric_name         = "ReplicationLatency"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.rpo_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags

  dimensions = {
    SourceBucket      = each.value.source_bucket
    DestinationBucket = each.value.destination_bucket
    RuleId            = each.value.rule_id
  }
}

resource "aws_cloudwatch_metric_alarm" "replication_failures" {
  for_each = var.replication_rules

  alarm_name          = "${var.name}-replication-failed-${each.key}"
  alarm_description   = "Objects of ${each.key} failed to replicate to the DR region."
  namespace           = "AWS/S3"
  metric_name         = "OperationsFailedReplication"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  tags                = var.tags

  dimensions = {
    SourceBucket      = each.value.source_bucket
    DestinationBucket = each.value.destination_bucket
    RuleId            = each.value.rule_id
  }
}

resource "aws_cloudwatch_metric_alarm" "error_rate" {
  alarm_name          = "${var.name}-5xx-rate"
  alarm_description   = "More than ${var.error_rate_percent}% of requests answered 5xx."
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  threshold           = var.error_rate_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags

  metric_query {
    id          = "rate"
    expression  = "IF(requests > 0, 100 * (FILL(errors, 0) + FILL(lb_errors, 0)) / requests, 0)"
    label       = "5xx percent"
    return_data = true
  }

  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      period      = 60
      stat        = "Sum"
      dimensions  = { LoadBalancer = var.load_balancer_arn_suffix }
    }
  }

  metric_query {
    id = "lb_errors"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      period      = 60
      stat        = "Sum"
      dimensions  = { LoadBalancer = var.load_balancer_arn_suffix }
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      period      = 60
      stat        = "Sum"
      dimensions  = { LoadBalancer = var.load_balancer_arn_suffix }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  count = var.standby ? 0 : 1

  alarm_name          = "${var.name}-no-ready-gateway"
  alarm_description   = "No gateway task answers /readyz (KMS unreachable, local audit trail failing or region fenced)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags

  dimensions = {
    LoadBalancer = var.load_balancer_arn_suffix
    TargetGroup  = var.target_group_arn_suffix
  }
}

# The gateway logs these JSON events when the trail cannot take a record
# (gateway/audit.py audit_unavailable, audit/trail.py audit.append_failed), when shipping to the
# WORM copy stopped (audit/worm.py audit.worm_shipping_stopped) and when the Iceberg
# mirror fails (audit/mirror.py).
resource "aws_cloudwatch_log_metric_filter" "audit_sink_failures" {
  name           = "${var.name}-audit-sink-failures"
  log_group_name = var.app_log_group_name
  pattern        = "{ ($.event = \"audit_unavailable\") || ($.event = \"audit.append_failed\") || ($.event = \"audit.sink_repair_failed\") || ($.event = \"audit.mirror_failed\") || ($.event = \"audit_mirror_failed\") || ($.event = \"audit.worm_shipping_stopped\") }"

  metric_transformation {
    name          = "AuditSinkFailures"
    namespace     = "fhirlake/${var.name}"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "audit_sink_failures" {
  alarm_name          = "${var.name}-audit-sink-failures"
  alarm_description   = "The audit trail or one of its copies failed to take records (trail: requests get 503; WORM copy: served from the local trail, backfilled later)."
  namespace           = "fhirlake/${var.name}"
  metric_name         = "AuditSinkFailures"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}

# CloudTrail: someone touched a key's state (disable, schedule deletion) or a bucket's policy.
resource "aws_cloudwatch_log_metric_filter" "key_and_bucket_policy_changes" {
  name           = "${var.name}-key-and-bucket-policy-changes"
  log_group_name = var.trail_log_group_name
  pattern        = "{ ($.eventSource = \"kms.amazonaws.com\" && (($.eventName = \"DisableKey\") || ($.eventName = \"ScheduleKeyDeletion\") || ($.eventName = \"PutKeyPolicy\"))) || ($.eventSource = \"s3.amazonaws.com\" && (($.eventName = \"PutBucketPolicy\") || ($.eventName = \"DeleteBucketPolicy\") || ($.eventName = \"PutBucketReplication\") || ($.eventName = \"DeleteBucketReplication\"))) }"

  metric_transformation {
    name          = "KeyOrBucketPolicyChanges"
    namespace     = "fhirlake/${var.name}"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "key_and_bucket_policy_changes" {
  alarm_name          = "${var.name}-key-or-bucket-policy-changed"
  alarm_description   = "A KMS key was disabled, scheduled for deletion or re-policied, or a bucket policy or replication rule changed."
  namespace           = "fhirlake/${var.name}"
  metric_name         = "KeyOrBucketPolicyChanges"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}
