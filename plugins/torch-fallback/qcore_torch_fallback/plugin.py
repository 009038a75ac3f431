"""Hook implementations of torch-fallback (filled in below)."""
