"""Use cases: where requests meet storage and triage."""
