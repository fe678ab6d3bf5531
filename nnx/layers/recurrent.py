"""Placeholder: filled in by the recurrent work."""

__all__: list[str] = []
