"""Errors raised for user mistakes and bad inputs.

Every message says what was wrong, naming the file, layer or argument, and what would be valid.
The CLI prints the message on one line and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Valid names listed in an error message at most (closest matches come first).
MAX_LISTED = 30


class DeepfeatError(Exception):
    """Base class for every error deepfeat raises on purpose."""


class ConfigError(DeepfeatError, ValueError):
    """An argument or option has a value deepfeat cannot use."""


class UnknownNameError(ConfigError, KeyError):
    """A backbone, layer, pooling or other name is not one of the valid names."""

    def __init__(self, what: str, name: str, valid: Iterable[str]):
        self.what = what
        self.name = name
        self.valid = list(valid)
        shown = ", ".join(self.valid[:MAX_LISTED]) or "none"
        if len(self.valid) > MAX_LISTED:
            shown += f", ... ({len(self.valid) - MAX_LISTED} more)"
        super().__init__(f"unknown {what} {name!r}; valid: {shown}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]

    def __reduce__(self):
        return type(self), (self.what, self.name, self.valid)


class DataError(DeepfeatError, ValueError):
    """A dataset, manifest or folder cannot be read as asked."""


class ImageError(DataError):
    """One image file cannot be decoded; carries its path and the reason."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # travels between processes (loader workers, cluster workers) intact
        return type(self), (self.path, self.reason)


class StoreError(DeepfeatError):
    """The feature store is missing an entry, is locked, or is damaged."""


class ClusterError(DeepfeatError):
    """A cluster cannot be reached, or a batch kept killing its workers."""


class BackboneError(DeepfeatError):
    """A backbone cannot be built or its weights cannot be loaded."""


class CheckpointError(DeepfeatError):
    """A checkpoint or weights file cannot be read safely, is damaged, or is of another kind."""
