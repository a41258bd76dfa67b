"""Errors that end a vaultgen command with one clear line and a documented exit code.

The exit codes and base classes are shared by every Odoo Box tool (odbox_common).
"""

from odbox_common.errors import ExitCode, LockHeldError, UsageError
from odbox_common.errors import ToolError as VaultError

__all__ = ["ExitCode", "LockHeldError", "UsageError", "VaultError"]
