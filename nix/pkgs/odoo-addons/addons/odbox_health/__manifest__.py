{
    "name": "Odoo Box health check",
    "summary": "GET /odbox/health: is Odoo up, with its database and filestore? For monitoring and "
    "the NixOS VM test.",
    "version": "1.0.0",
    "category": "Hidden/Tools",
    "author": "Odoo Box",
    "license": "LGPL-3",
    "depends": ["base", "web"],
    "data": [],
    "installable": True,
    "auto_install": False,
}
