"""dtf: a distributed testing framework."""

__version__ = "0.1.0"
