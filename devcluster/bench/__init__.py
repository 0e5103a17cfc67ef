"""Benchmarks against the anchor tools, measured side by side in one run."""
