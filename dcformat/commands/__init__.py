"""Subcommands of the ``dcformat`` command line, one module each, each with ``register(subparsers)``."""
