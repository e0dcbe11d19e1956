"""The event bus: topics, messages, properties, filters and subscriptions (Core §9).

Domain code publishes here; the SOAP event service (services/events.py) subscribes and
delivers. Nothing in this package does network I/O.
"""
