"""Orchestration of the stages for each user-facing command (below cli, above stages)."""
