"""odbox-backup: versioned, deduplicated, encrypted snapshots of an Odoo database and filestore."""

__version__ = "0.1.0"
