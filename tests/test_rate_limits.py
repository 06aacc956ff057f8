"""Rate limits through nginx (API.md 21), at their defaults: 5 sends per 5 seconds per user per
chat, 10 chats started a minute per user, counted in Redis for both chat instances at once.

The session's stack runs with limits far above what the rest of the suite sends; this module
restarts the chat instances without them (so the defaults apply) and restores them afterwards.
"""

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("default_limits")

LIMIT_SETTINGS = ("SEND_RATE_LIMIT", "START_CHAT_RATE_LIMIT")
HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Bucket",
)


@pytest.fixture(scope="module")
def default_limits(stack: Stack) -> Iterator[None]:
    names = stack.instances_of("private_chat")
    saved = {name: dict(stack.managed[name].env) for name in names}
    for name in names:
        for setting in LIMIT_SETTINGS:
            stack.managed[name].env.pop(setting, None)
    stack.rolling_restart("private_chat", say=lambda _: None)
    try:
        yield
    finally:
        for name in names:
            stack.managed[name].env.clear()
            stack.managed[name].env.update(saved[name])
        stack.rolling_restart("private_chat", say=lambda _: None)


async def start_chat(api: httpx.AsyncClient, sender: Any, recipient: Any) -> int:
    response = await api.post(
        "/private/start-chat/", json={"recipient_id": recipient.id}, headers=sender.headers
    )
    assert response.status_code == 200, response.text
    return int(response.json()["chat_id"])


async def at_once(
    base_url: str, requests: list[tuple[str, dict[str, Any], dict[str, str]]]
) -> list[httpx.Response]:
    """POSTs sent together, each on its own connection (nginx spreads them over both instances)."""
    clients = [httpx.AsyncClient(base_url=base_url, timeout=30) for _ in requests]
    try:
        return list(
            await asyncio.gather(
                *(
                    client.post(url, json=body, headers=headers)
                    for client, (url, body, headers) in zip(clients, requests, strict=True)
                )
            )
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


def check_headers(response: httpx.Response, limit: int, period: float) -> None:
    for name in HEADERS:
        assert name in response.headers, (name, response.status_code, dict(response.headers))
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert 0 <= int(response.headers["X-RateLimit-Remaining"]) < limit
    reset_after = float(response.headers["X-RateLimit-Reset-After"])
    assert 0 < reset_after <= period
    # Reset is the same moment as an epoch time (fractional); clocks of this host and Redis's agree.
    assert abs(float(response.headers["X-RateLimit-Reset"]) - (time.time() + reset_after)) < 5


def check_refusal(response: httpx.Response, limit: int, period: float) -> float:
    assert response.status_code == 429, response.text
    check_headers(response, limit, period)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    body = response.json()
    assert set(body) == {"detail", "code", "retry_after"}
    assert body["code"] == "too_many_requests"
    retry_after = body["retry_after"]
    assert isinstance(retry_after, float)
    assert 0 < retry_after <= period / limit
    # The header in whole seconds, rounded up: obeying it is always enough.
    assert int(response.headers["Retry-After"]) == max(1, -(-retry_after // 1))
    return float(retry_after)


async def upstreams(stack: Stack, responses: list[httpx.Response]) -> set[str]:
    """The chat instances nginx sent these requests to (from its access log, by request id)."""
    wanted = {response.headers["X-Request-Id"] for response in responses}
    log = stack.config.data_dir / "nginx" / "logs" / "access.log"
    found: dict[str, str] = {}
    for _ in range(50):  # nginx writes a line once its response is finished
        for line in log.read_text(errors="replace").splitlines():
            entry = json.loads(line)
            if entry["request_id"] in wanted:
                found[entry["request_id"]] = entry["upstream"]
        if len(found) == len(wanted):
            break
        await asyncio.sleep(0.1)
    return set(found.values())


async def stored(db: asyncpg.Connection, chat_id: int, prefix: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1 AND text LIKE $2",
            chat_id,
            f"{prefix}%",
        )
    )


async def test_sends_past_the_limit_are_429_on_both_instances_and_store_nothing(
    api: httpx.AsyncClient, base_url: str, db: asyncpg.Connection, stack: Stack, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    url = f"/private/add-message/{chat_id}/"
    started = time.monotonic()
    answers = await at_once(base_url, [(url, {"text": f"burst {i}"}, alice.headers) for i in range(10)])
    elapsed = time.monotonic() - started
    sent = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    # 5 at once, then one a second: counted for both instances together (each alone would let
    # 5 of its own through).
    assert 5 <= len(sent) <= 5 + int(elapsed), (elapsed, [r.text for r in answers])
    assert refused, elapsed
    ports = {f"127.0.0.1:{stack.config.ports[name]}" for name in stack.instances_of("private_chat")}
    assert await upstreams(stack, answers) == ports
    for response in sent:
        check_headers(response, 5, 5.0)
    waits = [check_refusal(response, 5, 5.0) for response in refused]
    assert len({r.headers["X-RateLimit-Bucket"] for r in answers}) == 1
    # Nothing of a refused send was stored: no message, no activity.
    assert await stored(db, chat_id, "burst ") == len(sent)
    # After retry_after a send goes through again.
    await asyncio.sleep(max(waits))
    again = await api.post(url, json={"text": "burst after"}, headers=alice.headers)
    assert again.status_code == 200, again.text
    check_headers(again, 5, 5.0)


async def test_the_count_is_per_user_and_per_chat(
    api: httpx.AsyncClient, base_url: str, make_user: Any
) -> None:
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    ours, theirs = await start_chat(api, alice, bob), await start_chat(api, alice, carol)
    answers = await at_once(
        base_url, [(f"/private/add-message/{ours}/", {"text": f"x{i}"}, alice.headers) for i in range(8)]
    )
    assert 429 in [r.status_code for r in answers]
    # alice's other chat, and bob in the same chat, have their own buckets, still full.
    for user, chat in ((alice, theirs), (bob, ours)):
        response = await api.post(
            f"/private/add-message/{chat}/", json={"text": "mine"}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Remaining"] == "4"
    # Other routes of the chat are not limited (API.md 21 limits sending and starting chats).
    page = await api.get(f"/private/{ours}/messages", headers=alice.headers)
    assert page.status_code == 200
    assert "X-RateLimit-Limit" not in page.headers


async def test_answers_of_every_kind_carry_the_headers(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    url = f"/private/add-message/{chat_id}/"
    not_member = await api.post(url, json={"text": "hi"}, headers=mallory.headers)
    assert not_member.status_code == 403
    bad_field = await api.post(url, json={"text": ""}, headers=alice.headers)
    assert bad_field.status_code == 422
    missing_reply = await api.post(
        url, json={"text": "hi", "message_answer_id": 9 * 10**15}, headers=alice.headers
    )
    assert missing_reply.status_code == 404
    # A body that is not JSON at all is refused before the route's parameters are solved.
    not_json = await api.post(
        url, content=b"{", headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["type"] == "json_invalid"
    # Nor is a body that is not UTF-8 (FastAPI's own answer to it was a 400 without the headers).
    not_utf8 = await api.post(
        url, content=b'{"text": "caf\xe9"}', headers={**bob.headers, "Content-Type": "application/json"}
    )
    assert not_utf8.status_code == 422
    assert not_utf8.json()["detail"][0]["type"] == "json_invalid"
    assert not_utf8.headers["X-RateLimit-Remaining"] == "4"  # bob's first request of the chat
    for response in (not_member, bad_field, missing_reply, not_json, not_utf8):
        check_headers(response, 5, 5.0)
    # Each counted: alice's first, second and third request of the chat (mallory's is in her own
    # bucket; a second may pass between them and give one back).
    assert bad_field.headers["X-RateLimit-Remaining"] == "4"
    assert missing_reply.headers["X-RateLimit-Remaining"] in ("3", "4")
    assert not_json.headers["X-RateLimit-Remaining"] in ("2", "3", "4")
    assert int(not_json.headers["X-RateLimit-Remaining"]) < int(bad_field.headers["X-RateLimit-Remaining"])
    assert not_member.headers["X-RateLimit-Remaining"] == "4"
    not_json_start = await api.post(
        "/private/start-chat/",
        content=b"[1,",
        headers={**mallory.headers, "Content-Type": "application/json"},
    )
    assert not_json_start.status_code == 422
    check_headers(not_json_start, 10, 60.0)
    # Past the limit, a body that is not JSON is refused as any other request: 429, as a bad field.
    for _ in range(6):
        last = await api.post(
            url, content=b"{", headers={**alice.headers, "Content-Type": "application/json"}
        )
    check_refusal(last, 5, 5.0)


async def test_starting_chats_is_limited_per_user(
    api: httpx.AsyncClient, base_url: str, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    # The same pair again and again counts too (start-chat is idempotent, each call still asks).
    answers = await at_once(
        base_url,
        [
            (
                "/private/start-chat/",
                {"recipient_id": bob.id, "text": f"open {i}"},
                {**alice.headers, "Accept-Language": "ru"},
            )
            for i in range(13)
        ],
    )
    sent = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(sent) == 10, [r.text for r in answers]  # one more only after 6 s
    for response in sent:
        check_headers(response, 10, 60.0)
    for response in refused:
        check_refusal(response, 10, 60.0)
        assert response.json()["detail"] == "Слишком много запросов"
    # A refused start-chat added no message.
    assert await stored(db, sent[0].json()["chat_id"], "open ") == 10
    # bob's own start-chats are his own count.
    assert (
        await api.post("/private/start-chat/", json={"recipient_id": alice.id}, headers=bob.headers)
    ).status_code == 200


def unchecked_total(stack: Stack) -> float:
    total = 0.0
    for name in stack.instances_of("private_chat"):
        text = httpx.get(f"{stack.instance_url(name)}/metrics", timeout=10).text
        for match in re.finditer(
            r'^chat_rate_limit_unchecked_total\{bucket="send"\} (\S+)$', text, re.MULTILINE
        ):
            total += float(match.group(1))
    return total


async def test_with_redis_unreachable_sends_are_allowed_counted_and_logged(
    api: httpx.AsyncClient, base_url: str, stack: Stack, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    url = f"/private/add-message/{chat_id}/"
    log_offsets = {name: len(stack.service_log(name)) for name in stack.instances_of("private_chat")}
    before = await asyncio.to_thread(unchecked_total, stack)
    await asyncio.to_thread(stack.stop_redis)
    try:
        started = time.monotonic()
        answers = [
            await api.post(url, json={"text": f"unchecked {i}"}, headers=alice.headers) for i in range(12)
        ]
        took = time.monotonic() - started
        after = await asyncio.to_thread(unchecked_total, stack)
    finally:
        await asyncio.to_thread(stack.start_redis)
    # The chat keeps working: twice the limit, every one stored, none slowed by the outage.
    assert [r.status_code for r in answers] == [200] * 12, [r.text for r in answers]
    assert took < 12 * 1.0, took
    for response in answers:
        check_headers(response, 5, 5.0)
        assert response.headers["X-RateLimit-Remaining"] == "4"  # as if the bucket were empty
    assert after - before == 12
    # Logged, at most once per instance within the interval (60 s by default).
    logged = [
        line
        for name, offset in log_offsets.items()
        for line in stack.service_log(name)[offset:].splitlines()
        if "rate limits unchecked" in line
    ]
    assert 1 <= len(logged) <= len(log_offsets), logged
    # With Redis back the limit holds again (within the limiter's 1 s before it asks again).
    deadline = time.monotonic() + 30
    while True:
        burst = await at_once(base_url, [(url, {"text": "back"}, alice.headers) for _ in range(8)])
        if 429 in [r.status_code for r in burst]:
            break
        assert time.monotonic() < deadline, "the limit does not hold again after Redis came back"
        await asyncio.sleep(1)
