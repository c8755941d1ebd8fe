"""The exception hierarchy: every error a user can cause is a LookalikeError.

Messages are written for the person at the terminal: what was expected, what was
found, and how to fix it. The CLI prints them without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class LookalikeError(Exception):
    """Base class for errors caused by input, configuration or on-disk state."""

    exit_code = 2


class UnknownNameError(LookalikeError):
    """A registry lookup (backbone, detector, index backend, preset) failed."""


class ImageLoadError(LookalikeError):
    """An image file could not be decoded into pixels."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedImageError(ImageLoadError):
    """The file is of a format lookalike does not read (HEIC, SVG, ...)."""


class ImageTooLargeError(ImageLoadError):
    """The image decodes to more pixels than the configured limit (a decompression bomb)."""


class CollectionError(LookalikeError):
    """A collection folder is missing, damaged or not a collection."""


class IncompatibleCollectionError(CollectionError):
    """The collection was written by another format version or with other settings."""


class DamagedPartError(CollectionError):
    """A part of a committed generation is missing or unreadable; `lookalike index` repairs it."""

    def __init__(self, problem: str, repair: str) -> None:
        self.problem = problem  # "PATH: what is wrong"
        super().__init__(f"{problem}; {repair}")


class CollectionBusyError(CollectionError):
    """Another process holds the collection's write lock."""

    exit_code = 3


class LabelsError(LookalikeError):
    """A labels file or labels argument is malformed."""


class QueryError(LookalikeError):
    """A query could not be answered (unknown id, unreadable query image, ...)."""
