"""The command line: parses arguments, runs the transfer manager, prints the report."""

from ghga_cli.cli.run import main

__all__ = ["main"]
