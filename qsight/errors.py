"""Errors that map to the CLI's exit codes."""

from __future__ import annotations


class QsightError(Exception):
    """Base of qsight's own errors."""

    exit_code = 1


class BadInputError(QsightError):
    """Bad input from the user (spec, override, path, data): exit code 2."""

    exit_code = 2


class DataError(BadInputError):
    """A dataset is missing, malformed or unreadable; the message names the file or row."""


class RunFailedError(QsightError):
    """The run started and failed (NaN loss, crash in a component): exit code 1."""


class RunStoppedError(RunFailedError):
    """The run was stopped on purpose before its end (a sweep pruned it): exit code 1, no traceback."""
