"""Developer tools that generate checked-in files (make chart)."""
