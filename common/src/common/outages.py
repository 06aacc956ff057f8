"""What counts as an outage: a backing service (PostgreSQL, Redis) that could not be reached, went
away in the middle of a request, or did not answer in time.

One definition for every service: the shared error handling answers any of these with
`ServiceUnavailable` (503 JSON with Retry-After) instead of a 500, and the database pool
(`common.db`) retries on them where that is safe. A client can do something about an outage
(try again later); a 500 would say the request itself broke something.
"""

import errno
import socket

import asyncpg
import redis.exceptions
import sqlalchemy.exc

# Network failures as the operating system reports them (refused, reset, unreachable, timed out).
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
    }
)

# PostgreSQL's own "not now" answers: shutting down, starting up, crashed, out of connections.
_POSTGRES_NOT_NOW = (
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions (incl. connection lost)
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: terminated by a shutdown or an administrator
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.TooManyConnectionsError,  # 53300
)

# The classes the error handlers are installed for; `is_outage` decides for each instance.
OUTAGE_CANDIDATES: tuple[type[Exception], ...] = (
    OSError,  # includes ConnectionError and TimeoutError (asyncio's too)
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sqlalchemy.exc.DBAPIError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says a backing service was unreachable or too slow."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_outage_itself(current):
            return True
        # SQLAlchemy wraps the driver's error in `orig`; others chain it as the cause.
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return False


def _is_outage_itself(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    if isinstance(exc, _POSTGRES_NOT_NOW):
        return True
    if type(exc) is asyncpg.InterfaceError:
        # asyncpg has no class of its own for "this connection is closed" (raised before anything
        # is sent) or "the pool is closing"; its other InterfaceErrors are the caller's mistakes.
        return "closed" in str(exc) or "closing" in str(exc)
    if isinstance(exc, asyncpg.InternalClientError):
        # "cannot switch to state ...; another operation is in progress": the statement met a
        # connection still reading the server's goodbye (its "terminating connection" arrived
        # while the connection sat in the pool). Raised before anything is sent.
        return "another operation" in str(exc) or '"failed" state' in str(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return bool(exc.connection_invalidated)
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return True  # no pooled connection came free in time
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if type(exc) is OSError:
        # asyncio reports a failed connection to several addresses as a plain OSError without
        # errno ("Multiple exceptions: ..."); a file error always has one.
        return exc.errno is None or exc.errno in _NETWORK_ERRNOS
    return False
