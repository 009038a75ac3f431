"""qcore backend plugin cpu-reference."""
