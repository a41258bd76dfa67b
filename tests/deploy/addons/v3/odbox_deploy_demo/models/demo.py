from odoo import api, fields, models
from odoo.exceptions import UserError


class DeployDemo(models.Model):
    _name = "odbox.deploy.demo"
    _description = "odbox-deploy's test model"

    name = fields.Char(required=True)
    colour = fields.Char()
    size = fields.Integer()

    @api.model
    def _fail_update(self):
        raise UserError("odbox_deploy_demo v3 fails its update on purpose")
