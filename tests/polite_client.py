"""A well-behaved client's one habit the tests share (tests/ is on sys.path under pytest): on a
429 it waits for Retry-After and asks again. The log-in and sign-up routes are rate limited per
address, and the whole suite comes from one."""

import asyncio
from typing import Any

import httpx


async def send_retrying(
    client: httpx.AsyncClient, method: str, url: str, *, attempts: int = 30, **kwargs: Any
) -> httpx.Response:
    for _ in range(attempts):
        response = await client.request(method, url, **kwargs)
        if response.status_code != 429:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def post_retrying(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    return await send_retrying(client, "POST", url, **kwargs)
