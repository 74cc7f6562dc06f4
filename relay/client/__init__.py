"""What a worker installs: reporters that publish progress, reporting sessions, retry and batching.

Imports :mod:`relay.protocol` only, never the gateway.
"""
