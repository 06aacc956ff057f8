"""How a route reaches what the lifespan built: the lifespan yields a typed state (a TypedDict),
Starlette hands a copy of it to every request and websocket as `connection.state`, and each
service names one dependency per object (`ServiceDep`, ...) made by `from_state`."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import HTTPConnection

T = TypeVar("T")


def from_state(key: str, kind: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A dependency answering the lifespan state's `key`, checked to be a `kind`."""

    async def dependency(connection: HTTPConnection) -> T:  # async: no worker-thread hop
        value = getattr(connection.state, key)
        if not isinstance(value, kind):
            raise TypeError(f"lifespan state {key!r} is {type(value).__name__}, not {kind.__name__}")
        return value

    dependency.__name__ = f"state_{key}"
    return dependency
