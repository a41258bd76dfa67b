"""Allow `python -m vaultgen`."""

from vaultgen.cli import main

main()
