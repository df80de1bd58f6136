"""What Tandem tells its operators: Prometheus metrics and log lines."""
