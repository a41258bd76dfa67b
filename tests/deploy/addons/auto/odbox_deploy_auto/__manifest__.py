{
    "name": "odbox-deploy test addon that Odoo auto-installs",
    "version": "17.0.1.0.0",
    "summary": "tests/deploy: auto_install once odbox_deploy_demo is installed",
    "depends": ["odbox_deploy_demo"],
    "auto_install": True,
    "license": "LGPL-3",
}
