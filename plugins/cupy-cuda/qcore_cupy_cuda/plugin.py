"""Hook implementations of cupy-cuda (filled in below)."""
