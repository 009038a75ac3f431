"""Hook implementations of cpu-reference (filled in below)."""
