"""What every Odoo Box tool shares: exit codes, one-line errors, journal-friendly output."""
