"""What the hub tells its operator: Prometheus metrics and structured (JSON) logs."""
