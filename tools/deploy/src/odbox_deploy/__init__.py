"""odbox-deploy: Odoo module updates behind a snapshot, rolled back on failure."""

__version__ = "0.1.0"
