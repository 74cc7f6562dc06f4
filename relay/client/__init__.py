"""What a worker installs: reporters that publish progress, reporting sessions, retry and batching.

Also the Python subscriber (:mod:`relay.client.subscriber`), which needs
aiohttp. Imports :mod:`relay.protocol` only, never the gateway.
"""
