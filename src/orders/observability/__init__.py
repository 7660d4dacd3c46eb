"""Metrics (Prometheus) and traces (OpenTelemetry) of the service: what it measures, how the
measurements leave the process, and the ASGI middleware that measures requests."""
