"""Rules of the users service: profiles, search, avatars. Raises typed errors, knows no HTTP."""

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.errors import ServiceUnavailable, UsernameTaken, UserNotFound
from common.metrics import AVATAR_PROCESSING
from users_service import repository
from users_service.errors import FileTooLarge
from users_service.images import Avatar, make_avatar
from users_service.repository import ProfileRow, UserRow
from users_service.schemas import NewUser
from users_service.settings import UsersSettings
from users_service.storage import AvatarStorage, StorageError

logger = logging.getLogger("users.service")


def avatar_key(user_id: int, avatar: Avatar) -> str:
    return f"avatars/{user_id}/{avatar.digest}.{avatar.extension}"


class UsersService:
    def __init__(self, engine: AsyncEngine, storage: AvatarStorage, settings: UsersSettings) -> None:
        self.engine = engine
        self.storage = storage
        self.settings = settings
        # Decoding a large image takes up to a few hundred MB: bound how many run at once.
        self._image_limiter = anyio.CapacityLimiter(settings.avatar_concurrency)
        # One waiter per user on the database lock: a burst of uploads from one account waits
        # here instead of holding pool connections.
        self._user_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def search(self, query: str, limit: int) -> list[UserRow]:
        async with self.engine.connect() as conn:
            return await repository.search_by_prefix(conn, query.strip().lower(), limit)

    async def profile(self, user_id: int) -> ProfileRow:
        async with self.engine.connect() as conn:
            row = await repository.get_user(conn, user_id)
        if row is None:
            raise UserNotFound()
        return row

    async def create_user(self, user_id: int, new: NewUser) -> tuple[ProfileRow, bool]:
        """The auth service's registration step: (the profile, whether this call created it).
        Idempotent for a retried id; a username someone else holds is UsernameTaken."""
        try:
            async with self.engine.begin() as conn:
                created = await repository.insert_user(conn, user_id, new)
                row = await repository.get_user(conn, user_id)
        except IntegrityError as exc:
            raise UsernameTaken() from exc
        assert row is not None
        if not created and row["username"] != new.username:
            raise UsernameTaken()
        return row, created

    async def delete_user(self, user_id: int) -> None:
        async with self.engine.begin() as conn:
            await repository.delete_user(conn, user_id)

    async def upload_avatar(self, user_id: int, data: bytes) -> str:
        """Checks, in order: size (413), type from the bytes (415), decodable and bounded (400).
        Returns the new avatar URL. The old object is deleted only once the new one is stored
        and recorded; any failure before that leaves the old avatar as it was."""
        if len(data) > self.settings.avatar_max_bytes:
            raise FileTooLarge()
        avatar = await anyio.to_thread.run_sync(self._make_avatar, data, limiter=self._image_limiter)
        del data

        key = avatar_key(user_id, avatar)
        url = self.storage.url(key)
        async with self._avatar_lock(user_id) as conn:
            async with conn.begin():
                exists, old_key = await repository.get_avatar_key(conn, user_id)
            if not exists:
                raise UserNotFound()
            try:
                await self.storage.put(key, avatar.data, avatar.content_type)
            except StorageError as exc:
                logger.error("avatar store failed", extra={"user_id": user_id, "error": str(exc)})
                raise ServiceUnavailable() from exc
            try:
                async with conn.begin():
                    await repository.set_avatar(conn, user_id, key=key, url=url)
            except BaseException:
                if key != old_key:
                    await self._delete_quietly(key)
                raise
            if old_key and old_key != key:
                await self._delete_quietly(old_key)
        return url

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.storage.delete(key)
        except (StorageError, ValueError) as exc:
            # Only wasted space: the avatar the user sees is intact either way.
            logger.warning("avatar object not deleted", extra={"key": key, "error": str(exc)})

    def _make_avatar(self, data: bytes) -> Avatar:
        with AVATAR_PROCESSING.time():
            return make_avatar(
                data, max_side=self.settings.avatar_max_side, max_pixels=self.settings.avatar_max_pixels
            )

    @asynccontextmanager
    async def _avatar_lock(self, user_id: int) -> AsyncIterator[AsyncConnection]:
        local = self._user_locks.get(user_id)
        if local is None:
            local = self._user_locks[user_id] = asyncio.Lock()
        async with local, self.engine.connect() as conn:
            await repository.lock_user_avatar(conn, user_id)
            await conn.commit()
            try:
                yield conn
            finally:
                try:
                    if conn.in_transaction():
                        await conn.rollback()
                    await repository.unlock_user_avatar(conn, user_id)
                    await conn.commit()
                except Exception:
                    # Never hand a connection that may still hold the lock back to the pool.
                    logger.warning("avatar lock not released cleanly", extra={"user_id": user_id})
                    await conn.invalidate()
