"""qcore backend plugin cupy-cuda."""
