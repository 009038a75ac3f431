"""qcore-example-backend: a minimal third-party qcore backend (see docs/plugins.md)."""
