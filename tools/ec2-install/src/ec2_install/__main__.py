"""Allow `python -m ec2_install`."""

from ec2_install.cli import main

main()
