"""pytest fixtures for the control plane, pod runner, Pushgateway and Prometheus."""
