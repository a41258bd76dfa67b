"""Errors that end a command with one clear line and a documented exit code."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes shared by every Odoo Box tool (see DESIGN.md)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PROBLEMS = 3
    LOCKED = 4
    INTERRUPTED = 130


class ToolError(Exception):
    """An operation failed; the message says what failed and what to do."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(ToolError):
    """The command line asks for something impossible."""

    exit_code = ExitCode.USAGE


class LockHeldError(ToolError):
    """Another run holds the lock."""

    exit_code = ExitCode.LOCKED
