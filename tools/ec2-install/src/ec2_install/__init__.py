"""ec2-install: one command from nothing to a NixOS Odoo box on EC2."""

__version__ = "0.1.0"
