"""The chat service's rate limits (API.md 21): sends per user per chat, chats started per user.

A route takes `SendLimited` or `StartChatLimited` as a parameter: the check runs before the
route's body does anything, so a refused request stores nothing, and every request that reaches
the route's handling counts (an answer of 403, 404 or 422 for a bad field too; a body that is not
JSON at all is refused by the framework first). The X-RateLimit-* headers go on every answer of
the route (common.ratelimit.RateLimitHeaders).
"""

from typing import Annotated

from fastapi import Depends, Request

from common.errors import TooManyRequests
from common.identity import CurrentUserId
from common.ids import parse_id
from common.ratelimit import Limit, RateLimiter, remember_headers
from common.state import from_state


class ChatLimits:
    def __init__(self, limiter: RateLimiter, *, send: Limit | None, start_chat: Limit | None) -> None:
        self.limiter = limiter
        self.send = send
        self.start_chat = start_chat

    async def enforce(self, request: Request, limit: Limit | None, who: str) -> None:
        """Raises TooManyRequests past the limit; the request's answer gets the headers either way."""
        if limit is None:  # turned off (`0`)
            return
        decision = await self.limiter.check(limit, who)
        remember_headers(request.scope.setdefault("state", {}), decision)
        if not decision.allowed:
            raise TooManyRequests(decision.retry_after)


LimitsDep = Annotated[ChatLimits, Depends(from_state("limits", ChatLimits))]


async def _send_limited(request: Request, user_id: CurrentUserId, limits: LimitsDep) -> None:
    # Read from the path as it is (the route validates it too): a malformed id is the route's 422,
    # and a parameter here would list its error twice.
    chat_id = parse_id(request.path_params.get("chat_id", ""))
    if chat_id is not None:
        await limits.enforce(request, limits.send, f"{user_id}:{chat_id}")


async def _start_chat_limited(request: Request, user_id: CurrentUserId, limits: LimitsDep) -> None:
    await limits.enforce(request, limits.start_chat, str(user_id))


SendLimited = Annotated[None, Depends(_send_limited)]
StartChatLimited = Annotated[None, Depends(_start_chat_limited)]
