"""Exceptions with messages that name the file or parameter at fault and say how to fix it."""
from __future__ import annotations

import os
from pathlib import Path


class CreateMLError(Exception):
    """Base class of every error this package raises on purpose."""


class DataSourceError(CreateMLError, ValueError):
    """The training or evaluation data cannot be used as given."""


class ParameterError(CreateMLError, ValueError):
    """A model or session parameter has a value outside what is allowed."""

    def __init__(self, name: str, value: object, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


class UnreadableFileError(CreateMLError, ValueError):
    """One input file cannot be read (missing, empty, corrupt, or not an image/video)."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path, self.reason = Path(path) if path is not None else None, reason
        super().__init__(f"cannot read {path}: {reason}")


class NoHandDetectedError(CreateMLError, ValueError):
    """Hand landmark detection found no hand in an image or video."""

    cacheable = True  # the answer will not change: the feature cache remembers it

    def __init__(self, source: str | os.PathLike, detail: str = ""):
        self.source = source
        super().__init__(
            f"no hand was detected in {source}{': ' + detail if detail else ''}; use a photo where one hand "
            "is clearly visible (not cut off at the edges, well lit)"
        )


class SessionError(CreateMLError, RuntimeError):
    """A training session cannot be created, restored or resumed."""
