"""vaultgen: an age-encrypted secrets vault for Odoo Box machines."""

__version__ = "0.1.0"
