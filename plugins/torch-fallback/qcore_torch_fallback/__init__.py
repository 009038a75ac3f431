"""qcore backend plugin torch-fallback."""
