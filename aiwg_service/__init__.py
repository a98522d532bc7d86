"""aiwg-service: a per-user systemd service that supervises projects for AI-augmented development."""

__version__ = "0.1.0"
