"""Output for vaultgen: the shared Odoo Box console (journal lines off a terminal)."""

from odbox_common.console import error, is_terminal, print_json, say, table, warn

__all__ = ["error", "is_terminal", "print_json", "say", "table", "warn"]
