"""Allow `python -m k8s_migrate`."""

from k8s_migrate.cli import main

main()
