"""traceroute-operator: TracerouteProbe objects -> CronJobs, status, alerts, dashboards."""

__version__ = "0.1.0"
