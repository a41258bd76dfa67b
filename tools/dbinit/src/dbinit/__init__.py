"""dbinit: Postgres roles, databases and least-privilege grants for an Odoo Box."""

__version__ = "0.1.0"
