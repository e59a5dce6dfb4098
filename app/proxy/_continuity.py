"""Continuing a response on the account that made it (``previous_response_id``, per-response endpoints).

The owner is used if it can serve now. Cooling down after a 429 (or full), it is waited for up to
a bound; ejected, removed or switched off, the client is told so, in words that name the cause,
rather than sent to another account that would answer ``previous_response_not_found``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from app.errors import GatewayError, NotFoundError, RateLimitError, ServiceUnavailableError
from app.pool import Pool, UpstreamState
from app.proxy._exchange import Exchange
from app.proxy._owners import Owner, ResponseOwners
from app.proxy._request import ClientRequest
from keys import KeyRecord

__all__ = ["Continuity", "OwnerGone"]


class OwnerGone(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "response_owner_gone"


def not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Previous response with id '{response_id}' not found.", code="previous_response_not_found",
                         param="previous_response_id")


class Continuity:
    def __init__(self, owners: ResponseOwners, pool: Pool, wait: float, clock: Callable[[], float]) -> None:
        self.owners = owners
        self.pool = pool
        self.wait = wait
        self.clock = clock

    async def remember(self, exchange: Exchange) -> None:
        """As an answer begins: a Responses answer's id belongs to the upstream that made it, for this key
        (known here at once, and in Redis before the client reads on)."""
        if exchange.response_id and exchange.upstream_id and exchange.endpoint.startswith("responses"):
            await self.owners.remember(exchange.response_id,
                                       Owner(exchange.upstream_id, exchange.key_id, exchange.model))

    async def owner_of(self, request: ClientRequest, key: KeyRecord) -> UpstreamState | None:
        """The upstream a request must go to; None when it may go anywhere."""
        if request.previous_response_id is None:
            return None
        return await self.resolve(request.previous_response_id, key, request.model.names)

    async def resolve(self, response_id: str, key: KeyRecord,
                      names: tuple[str, ...] | None = None) -> UpstreamState | None:
        """The owner of ``response_id``, ready to serve (waited for when it only cools down); None when
        the response's owner is not known here (then any upstream may be asked)."""
        owner = await self.owners.owner(response_id)
        if owner is None:
            return None
        if owner.key_id != key.id:
            raise not_found(response_id)  # another key's response: as if it did not exist
        state = self.pool.states.get(owner.upstream_id)
        if state is None or not state.record.enabled or state.unusable is not None:
            why = ("has been removed" if state is None else "is switched off" if not state.record.enabled
                   else "cannot be used here (its credential cannot be decrypted)")
            raise OwnerGone(
                f"The response '{response_id}' was made by an upstream account that {why}; its conversation "
                "cannot continue on another account. Start a new conversation (without previous_response_id)."
            )
        if names is not None and not state.serves(names):
            raise OwnerGone(
                f"The upstream account that made the response '{response_id}' does not serve the model "
                f"'{names[0]}'; continue the conversation with the model that made it ({owner.model})."
            )
        deadline = self.clock() + self.wait
        while True:
            now = self.clock()
            if state.ejected_until > now:
                back = state.ejected_until - now
                raise ServiceUnavailableError(
                    f"The upstream account that made the response '{response_id}' is failing and rests for "
                    f"another {math.ceil(back)}s; its conversation can continue once it is back.",
                    code="response_owner_unavailable", headers={"retry-after": str(max(1, math.ceil(back)))},
                )
            if state.available(now):
                return state
            wait = max(state.cooldown_until - now, 0.05)
            if now + wait > deadline:
                raise RateLimitError(
                    f"The upstream account that made the response '{response_id}' is rate-limited; its "
                    "conversation can only continue there.", retry_after=wait, code="response_owner_rate_limited",
                )
            await asyncio.sleep(min(wait, 0.25))
