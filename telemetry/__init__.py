"""Process-wide Prometheus instruments every layer may record into (see ``telemetry.metrics``)."""
