"""The state service."""
