"""Accounts: registration, log-in and log-out. Raises typed errors; knows nothing of HTTP routing."""

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service import repository
from auth_service.errors import EmailTaken, InvalidCredentials
from auth_service.passwords import Passwords
from auth_service.tokens import TokenIssuer
from auth_service.users_client import NewProfile, UsernameRefused, UsersClient, UsersUnavailable
from common.errors import ServiceUnavailable, TooManyRequests, UsernameTaken
from common.i18n import Language
from common.metrics import LOGIN_BRAKE_HITS, LOGIN_FAILURES

logger = logging.getLogger(__name__)


class AccountService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        passwords: Passwords,
        issuer: TokenIssuer,
        users: UsersClient,
        pending_timeout: timedelta,
        login_max_failures: int = 10,
        login_failure_window: timedelta = timedelta(minutes=15),
        cutoff_retention: timedelta = timedelta(days=1),
    ) -> None:
        self.engine = engine
        self.passwords = passwords
        self.issuer = issuer
        self.users = users
        self.pending_timeout = pending_timeout
        self.login_max_failures = login_max_failures
        self.login_failure_window = login_failure_window
        # How long a log-out-everywhere cutoff is kept: past the life of any token it cut off.
        self.cutoff_retention = cutoff_retention

    async def create_account(
        self,
        *,
        email: str | None,
        password_hash: str | None,
        profile: NewProfile,
        yandex_id: str | None = None,
    ) -> int:
        """Registration spans two services; this is its saga.

        1. Reserve the credentials row (state 'pending'; unique email / Yandex id decide a race).
        2. Create the profile in the users service under that id (unique username decides a race).
        3. Mark the credentials 'active'. Only active rows can log in.
        A failure undoes the earlier steps; a crash between them leaves a pending row that
        housekeeping removes (with its profile) after `pending_timeout`.
        """
        try:
            async with self.engine.begin() as conn:
                user_id = await repository.insert_pending(
                    conn, email=email, password_hash=password_hash, yandex_id=yandex_id
                )
        except IntegrityError as exc:
            # The email's unique key (or the Yandex id's) refused it.
            raise EmailTaken() from exc
        try:
            await self.users.create_user(user_id, profile)
        except UsernameRefused as exc:
            await self._forget(user_id, profile_created=False)
            raise UsernameTaken() from exc
        except UsersUnavailable as exc:
            logger.warning("users service unavailable during registration", extra={"error": str(exc)})
            await self._forget(user_id, profile_created=exc.sent)
            raise ServiceUnavailable() from exc
        async with self.engine.begin() as conn:
            await repository.activate(conn, user_id)
        return user_id

    async def _forget(self, user_id: int, *, profile_created: bool) -> None:
        if profile_created:
            try:
                await self.users.delete_user(user_id)
            except UsersUnavailable:
                # Leave the pending row: housekeeping retries the profile deletion later.
                return
        async with self.engine.begin() as conn:
            await repository.delete_credentials(conn, user_id)

    async def register(
        self,
        *,
        username: str,
        email: str,
        password: str,
        description: str | None,
        status: str | None,
        locale: Language,
    ) -> int:
        password_hash = await self.passwords.hash(password)
        profile: NewProfile = {
            "username": username,
            "description": description or "",
            "status": status or "",
            "locale": locale,
        }
        return await self.create_account(email=email, password_hash=password_hash, profile=profile)

    async def login(self, *, email: str, password: str) -> str:
        email = email.strip().lower()
        # The guess is counted before its hash is verified, in one statement: however many
        # log-ins for one email arrive at once, at most the allowance reach the password check.
        async with self.engine.begin() as conn:
            reserved = await repository.reserve_login_guess(
                conn, email, self.login_failure_window, self.login_max_failures
            )
            window_start = None if reserved else await repository.login_window_start(conn, email)
        if window_start is not None:
            # Counted per email whether or not it is registered, so the brake reveals nothing.
            retry_after = window_start + self.login_failure_window - datetime.now(UTC)
            LOGIN_BRAKE_HITS.inc()
            raise TooManyRequests(retry_after.total_seconds())
        async with self.engine.connect() as conn:
            account = await repository.active_by_email(conn, email)
        password_hash = account.password_hash if account else None
        # Unknown email, wrong password and a password-less (Yandex-only) account all verify a
        # hash and fail the same way, so neither the body nor the timing tells them apart. A
        # failed guess stays counted.
        if not await self.passwords.verify(password_hash, password) or account is None:
            LOGIN_FAILURES.inc()
            raise InvalidCredentials()
        assert password_hash is not None
        # The right password clears the email's count, this guess included.
        async with self.engine.begin() as conn:
            await repository.clear_login_failures(conn, email)
        if self.passwords.needs_rehash(password_hash):
            new_hash = await self.passwords.hash(password)
            async with self.engine.begin() as conn:
                await repository.set_password_hash(conn, account.user_id, new_hash)
        return self.issuer.issue(account.user_id)

    async def login_with_yandex_id(self, yandex_id: str) -> str | None:
        """A token for the active account registered with this Yandex id; None when there is none."""
        async with self.engine.connect() as conn:
            user_id = await repository.active_by_yandex_id(conn, yandex_id)
        return self.issuer.issue(user_id) if user_id is not None else None

    async def logout(self, token: str) -> None:
        claims = self.issuer.verifier.verify(token)
        async with self.engine.begin() as conn:
            await repository.revoke(conn, claims.jti, datetime.fromtimestamp(claims.expires_at, UTC))

    async def logout_everywhere(self, user_id: int) -> None:
        """Every token of the user issued until now stops working, and with them every ticket they
        minted and every event session they opened. The cutoff is this process's clock, the one
        the issuer stamps `iat` with."""
        async with self.engine.begin() as conn:
            await repository.cut_off_tokens(conn, user_id, datetime.now(UTC))

    async def housekeeping(self) -> None:
        """Finish what crashed registrations left behind, and drop expired revocations."""
        async with self.engine.connect() as conn:
            stale = await repository.stale_pending(conn, self.pending_timeout)
        for user_id in stale:
            try:
                await self.users.delete_user(user_id)
            except UsersUnavailable:
                return
            async with self.engine.begin() as conn:
                await repository.delete_credentials(conn, user_id)
            logger.info("removed an unfinished registration", extra={"user_id": user_id})
        async with self.engine.begin() as conn:
            await repository.purge_expired_revocations(conn)
            await repository.purge_old_cutoffs(conn, self.cutoff_retention)
            await repository.purge_old_login_failures(conn, self.login_failure_window)
