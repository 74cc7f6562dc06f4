"""The ``relay`` command and its tools: serve, publish, watch, demo, token."""

from relay.cli.main import main

__all__ = ["main"]
