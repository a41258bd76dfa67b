from odoo import fields, models


class DeployDemo(models.Model):
    _name = "odbox.deploy.demo"
    _description = "odbox-deploy's test model"

    name = fields.Char(required=True)
    colour = fields.Char()
