"""What every part of relay agrees on: the event, stream entries and ids, wire frames, key names.

This package imports nothing else of relay, so workers, gateways and tools
share one definition of every rule.
"""
