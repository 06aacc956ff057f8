"""The chat service's rate limits (API.md 21): sends per user per chat, chats started per user.

A route takes `SendLimited` or `StartChatLimited` as a parameter: the check runs before the
route's body does anything, so a refused request stores nothing, and every request that reaches
the route counts (an answer of 403, 404 or 422 too). A body that is not JSON at all is refused by
the framework before the route's parameters are looked at; `check_refused_request` checks its
limit then, so it counts the same and its answer carries the headers too. The X-RateLimit-*
headers go on every answer of the route (common.ratelimit.RateLimitHeaders) whose bucket is
known: not on nginx's own refusals (no token, a body over nginx's limit), nor on a chat id that is
not an id (a bucket is per chat).
"""

from typing import Annotated

from fastapi import Depends, Request

from common.errors import TooManyRequests
from common.identity import CurrentUserId
from common.ids import parse_id
from common.ratelimit import STATE_KEY, Limit, RateLimiter, remember_headers
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


async def check_refused_request(request: Request) -> None:
    """The limit of a limited route's request that the framework refused before the route's
    parameters were solved (a body that is not JSON): checked as the route would have. Raises
    TooManyRequests past it; a request whose limit was already checked is left alone."""
    if STATE_KEY in request.scope.get("state", {}):
        return
    dependant = getattr(request.scope.get("route"), "dependant", None)
    calls = {dependency.call for dependency in getattr(dependant, "dependencies", ())}
    limited = next((check for check in (_send_limited, _start_chat_limited) if check in calls), None)
    user_id = parse_id(request.headers.get("x-user-id", ""))
    limits = getattr(request.state, "limits", None)
    if limited is None or user_id is None or not isinstance(limits, ChatLimits):
        return
    await limited(request, user_id, limits)
