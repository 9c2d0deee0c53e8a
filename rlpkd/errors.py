"""User-facing errors: one clear line (what, where, how to fix), never a traceback."""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "DataError"]


class UserError(Exception):
    """An error caused by the user's input; scripts print its message and exit non-zero."""


class ConfigError(UserError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(UserError):
    """A dataset is missing or unreadable (annotation file, image file)."""
