"""Allow `python -m odbox_deploy`."""

from odbox_deploy.cli import main

main()
