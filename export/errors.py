"""Typed export failures; the CLI prints them as one line and exits non-zero."""


class ExportError(Exception):
    """The export cannot go on; the message says what to do."""


class CheckpointError(ExportError):
    """The checkpoint is missing, unreadable, or not a supported layout."""


class DownloadError(ExportError):
    """A hub id could not be downloaded (no network, unknown id)."""


class ValidationError(ExportError):
    """The exported model disagrees with PyTorch beyond the tolerance."""
