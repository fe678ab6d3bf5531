"""Placeholder: filled in by the training-workflow work."""

__all__: list[str] = []
