"""Running as a service: systemd notify and journal, Prometheus metrics, health."""
