"""The gateway's Python SDK (request/reply over Kafka)."""

from .client import GatewayClient, raise_for

__all__ = ["GatewayClient", "raise_for"]
