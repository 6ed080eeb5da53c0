"""The one exception type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing or malformed. The message names the file and how to fix it."""
