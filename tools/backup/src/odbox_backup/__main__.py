"""Allow `python -m odbox_backup`."""

from odbox_backup.cli import main

main()
