"""Chat-triage service."""
