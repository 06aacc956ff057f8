"""The optional nginx auth cache (NGINX_AUTH_CACHE_SECONDS > 0), and what it promises: a token's
"good" answer is kept that long per Authorization value, so a logout takes effect up to that many
seconds late, and never later.

The test stack's nginx runs with the cache off (the default). A second nginx, rendered by
devstack from the same template with the cache on, runs on its own port in front of the same
stack's services; each request below can be sent through either, at the same moment.
"""

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack import Stack
from devstack.config import free_port
from devstack.nginx import Nginx

pytestmark = pytest.mark.usefixtures("stack")

CACHE_SECONDS = 3
# nginx stamps a cached answer with whole seconds: it may be served up to one second past
# CACHE_SECONDS after it was stored.
GRANULARITY = 1.0


@pytest.fixture(scope="module")
def cached_url(stack: Stack) -> Iterator[str]:
    # Fresh internal and status addresses (given anew when left empty): the session's nginx
    # listens on its own.
    config = dataclasses.replace(
        stack.config,
        data_dir=stack.config.data_dir / "auth-cache",
        http_port=free_port(),
        internal_ports={},
        status_port=0,
    )
    assert config.status_port not in (0, stack.config.status_port)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NGINX_AUTH_CACHE_SECONDS", str(CACHE_SECONDS))
        command = Nginx(config, stack.config.data_dir / "media", edge_secret=stack.edge_secret).command()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{config.http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the second nginx exited"
            try:
                if httpx.get(f"{url}/nginx-health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second nginx did not answer"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def cached(cached_url: str) -> Any:
    async with httpx.AsyncClient(base_url=cached_url, timeout=30) as client:
        yield client


async def test_each_token_is_kept_apart(cached: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    for _ in range(2):  # the second round is answered from the cache
        for user in (alice, bob):
            me = await cached.get("/users/me/", headers=user.headers)
            assert me.status_code == 200
            assert me.json()["id"] == user.id
    # The key is the whole Authorization value: a kept answer never serves another one.
    forged = {"Authorization": f"Bearer {alice.token}x"}
    assert (await cached.get("/users/me/", headers=forged)).status_code == 401
    assert (await cached.get("/users/me/")).status_code == 401


async def test_a_logout_takes_effect_late_but_within_the_cache_time(
    api: httpx.AsyncClient, cached: httpx.AsyncClient, make_user: Any
) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(3):
        user = await make_user()
        started = loop.time()
        # The gateway's "good" answer for this token is stored now (between `started` and
        # `stored_by`), and kept at least CACHE_SECONDS from then.
        assert (await cached.get("/users/me/", headers=user.headers)).status_code == 200
        stored_by = loop.time()
        assert (await api.post("/auth/logout/", headers=user.headers)).status_code == 200
        # Without the cache, the logout holds at once.
        assert (await api.get("/users/me/", headers=user.headers)).status_code == 401
        late = await cached.get("/users/me/", headers=user.headers)
        if loop.time() - started >= CACHE_SECONDS:
            continue  # the machine was too slow to see inside the window; try again
        # With it, the revoked token still passes: nobody asked the gateway.
        assert late.status_code == 200
        assert late.json()["id"] == user.id
        break
    else:
        pytest.fail(f"three tries never fitted inside {CACHE_SECONDS} s")
    # Once the kept answer is older than CACHE_SECONDS (plus nginx's whole-second stamp), the
    # gateway is asked again and refuses.
    await asyncio.sleep(stored_by + CACHE_SECONDS + GRANULARITY + 0.1 - loop.time())
    refused = await cached.get("/users/me/", headers=user.headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == "not_authenticated"
