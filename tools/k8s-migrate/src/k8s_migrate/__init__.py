"""k8s-migrate: pull an Odoo database and filestore out of Kubernetes."""

__version__ = "0.1.0"
