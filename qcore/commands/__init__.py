"""Subcommands of the `qcore` CLI, one module each; each exposes `register(subparsers)`."""
