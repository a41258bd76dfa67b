"""Allow `python -m dbinit`."""

from dbinit.cli import main

main()
