"""trine: the command line and local stack launcher."""

__version__ = "0.1.0"
