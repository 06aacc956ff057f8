"""The benchmark harness's own parts, on the test stack: wrk's Lua script counts what it should,
the bench-only nginx locations are absent unless asked for, and the gateway's fast path answers
exactly what its route does."""

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest


def _load_bench_tools() -> Any:
    # Loaded by path: the repository root (where bench/ lives) is not on sys.path under pytest.
    path = Path(__file__).resolve().parents[1] / "bench" / "tools.py"
    spec = importlib.util.spec_from_file_location("bench_tools", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tools"] = module
    spec.loader.exec_module(module)
    return module


tools = _load_bench_tools()
Load, wrk, write_requests = tools.Load, tools.wrk, tools.write_requests

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
ONE_SECOND = Load(connections=2, threads=1, duration=1, warmup=0)


@needs_wrk
def test_wrk_script_counts_requests_and_non_2xx(base_url: str, tmp_path: Path) -> None:
    good = write_requests(tmp_path / "good.txt", [("GET", "/nginx-health", "", "", "")])
    result = wrk("good", base_url, good, ONE_SECOND)
    assert result.requests > 0
    # The script saw every answer wrk counted, and none of them was outside 2xx.
    assert result.detail["responses"] == result.requests
    assert result.non2xx == 0
    assert result.errors == 0
    assert result.p50_ms <= result.p99_ms

    missing = write_requests(tmp_path / "missing.txt", [("GET", "/no-such-path", "", "", "")])
    result = wrk("missing", base_url, missing, ONE_SECOND)
    assert result.requests > 0
    # Every answer was a 404 and the script counted each one (a counter that counts nothing
    # would give 0 == 0 here).
    assert result.detail["responses"] == result.requests
    assert result.non2xx == result.requests
    assert result.non2xx > 0


@needs_wrk
async def test_wrk_script_sends_method_headers_and_body(
    base_url: str, api: httpx.AsyncClient, make_user: Any, tmp_path: Path
) -> None:
    alice, bob = await make_user(), await make_user()
    started = await api.post("/private/start-chat/", json={"recipient_id": bob.id}, headers=alice.headers)
    chat_id = started.json()["chat_id"]
    body = '{"text": "from wrk"}'
    lines = [("POST", f"/private/add-message/{chat_id}/", f"Bearer {alice.token}", "", body)]
    result = wrk("send", base_url, write_requests(tmp_path / "send.txt", lines), ONE_SECOND)
    assert result.requests > 0
    assert result.non2xx == 0
    page = await api.get(f"/private/{chat_id}/messages", params={"limit": 1}, headers=bob.headers)
    assert page.json()[0]["text"] == "from wrk"
    assert page.json()[0]["message_owner"]["id"] == alice.id


async def test_bench_locations_are_not_rendered_without_the_flag(
    api: httpx.AsyncClient, make_user: Any
) -> None:
    user = await make_user()
    response = await api.get("/bench/noauth/private/chat-list/", headers={"X-User-Id": str(user.id)})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found", "code": "not_found"}


async def test_gateway_fast_path_matches_the_route(api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    for authorization in (f"Bearer {user.token}", user.token):
        good = await api.get("/gateway/get-token/", headers={"Authorization": authorization})
        assert good.status_code == 200
        assert good.json() == {"user_id": user.id}
        assert good.headers["X-User-Id"] == str(user.id)
    head = await api.head("/gateway/get-token/", headers=user.headers)
    assert head.status_code == 200
    assert head.headers["X-User-Id"] == str(user.id)
    # Refusals fall through to the route, which words them.
    forged = await api.get("/gateway/get-token/", headers={"Authorization": f"Bearer {user.token}x"})
    assert forged.status_code == 401
    assert "X-User-Id" not in forged.headers
    missing = await api.get("/gateway/get-token/")
    assert missing.status_code == 401
