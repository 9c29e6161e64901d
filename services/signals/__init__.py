"""The signals service."""
