"""qcore backend plugin triton-gpu."""
