"""Errors that carry a user-facing message.

`InputError` is raised for user mistakes (missing or corrupt file, wrong format, empty depth, no camera):
the CLI prints its message on one line and exits with code 2, never a traceback.
"""
from __future__ import annotations


class NRStudioError(Exception):
    """Base class of all errors nrstudio raises on purpose."""

    exit_code: int = 1


class InputError(NRStudioError):
    """Bad input from the user: the message names the file and the problem. CLI exit code 2."""

    exit_code = 2


class DeviceError(InputError):
    """No camera connected, camera unplugged, or a device that cannot stream what was asked."""


class StallError(NRStudioError):
    """A frame source (typically the RealSense SDK) stopped delivering frames within its timeout."""

    exit_code = 3


class NotAvailableError(NRStudioError):
    """A command or feature whose issue has not landed yet."""

    exit_code = 4
