"""``python -m flowstream`` runs the command line."""

from flowstream.cli import main

main()
