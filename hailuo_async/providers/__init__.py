"""Providers: the services a client can send its jobs to, each in its own dialect.

``"gateway"`` (the default) is the v3 API in ``API.md``; ``"minimax"`` is MiniMax's own v1
API. Everything above a provider (limits, retries, the watcher, batches, the journal,
scale-out, webhooks, downloads) is the same for both. Pick one with
``HailuoClient(provider="minimax")``, the ``HAILUO_PROVIDER`` variable, or ``--provider`` on
the command line; a :class:`Provider` object of your own works as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from .._exceptions import InvalidRequestError
from .._push import WebhookEvent, webhook_data
from ._gateway import GatewayProvider
from ._minimax import MiniMaxProvider
from ._protocol import Provider

__all__ = [
    "PROVIDERS",
    "PROVIDER_ENV",
    "GatewayProvider",
    "MiniMaxProvider",
    "ProviderName",
    "parse_webhook",
    "provider_for",
]

ProviderName = Literal["gateway", "minimax"]
"""The providers this library ships."""
PROVIDERS: Mapping[str, Provider] = {"gateway": GatewayProvider(), "minimax": MiniMaxProvider()}
"""Each shipped provider by name."""
PROVIDER_ENV = "HAILUO_PROVIDER"
"""The variable a provider's name is read from when none is given."""


def provider_for(provider: str | Provider | None = None) -> Provider:
    """The provider ``provider`` names (or is); None reads ``HAILUO_PROVIDER``, else "gateway".

    An unknown name raises :class:`~hailuo_async.InvalidRequestError` naming ``provider``.
    """
    if provider is None:
        provider = os.environ.get(PROVIDER_ENV) or "gateway"
    if isinstance(provider, str):
        found = PROVIDERS.get(provider.strip().lower())
        if found is None:
            names = " or ".join(repr(name) for name in PROVIDERS)
            raise InvalidRequestError("provider", f"must be {names}, not {provider!r}")
        return found
    if not isinstance(provider, Provider):
        raise InvalidRequestError(
            "provider", f"must be a name or a Provider, not {type(provider).__name__}"
        )
    return provider


def parse_webhook(
    body: bytes | str | Mapping[str, Any], provider: str | Provider | None = "gateway"
) -> WebhookEvent:
    """Check a webhook body's shape and return what it claims, or raise WebhookError.

    ``body`` is the raw request body (bytes or text) or the JSON object already decoded;
    ``provider`` is whose body it is. Only the fields needed to route the event are read;
    it is confirmed later, by polling the task.
    """
    return provider_for(provider).parse_webhook(webhook_data(body))
