"""traceroute-probe: an unprivileged, Paris-style, paced traceroute engine."""

__version__ = "0.1.0"
