"""Hook implementations of triton-gpu (filled in below)."""
