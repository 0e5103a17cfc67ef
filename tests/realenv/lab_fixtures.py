"""pytest fixtures for the network-namespace lab (see lab.py)."""
