"""The ``dtf`` command line."""

from dtf.cli.app import cli, main

__all__ = ["cli", "main"]
