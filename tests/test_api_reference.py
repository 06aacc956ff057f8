"""docs/API.md, the API reference for client developers, against what the running stack serves.

The reference lists each endpoint under a heading `### METHOD /path` (websockets: `### WS /path`),
with its success status as "Response `200`" and its errors as table rows
"| 404 | `chat_not_found` | ... |". These tests read every service's OpenAPI document through
nginx (the same URLs a client developer opens) and check, both ways, that the reference lists
exactly the endpoints the services publish, and that each endpoint's section names every status
and error code its OpenAPI document declares. Websockets are not in OpenAPI: the reference's
websocket headings are compared with the services' websocket routes, and each is opened through
nginx.
"""

import importlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIWebSocketRoute
from websockets.asyncio.client import connect

from devstack.config import REPO_ROOT, present_services

REFERENCE = REPO_ROOT / "docs" / "API.md"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ENDPOINT_HEADING = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE|WS) (/\S*)\s*$")
SECTION_END = re.compile(r"^#{1,3} ")
SUCCESS = re.compile(r"Response `(\d{3})`")
ERROR_ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z0-9_]+)`\s*\|")

# What a client must add to a websocket's URL to be let in (a QR hub is named by its client_id).
WEBSOCKET_QUERY = {"/auth_events/qr_auth/": lambda: f"?client_id={secrets.token_urlsafe(24)}"}

pytestmark = pytest.mark.usefixtures("stack")


@dataclass
class Section:
    """One endpoint of the reference: what its section says."""

    line: int
    statuses: set[int] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)


def read_reference(path: Path = REFERENCE) -> tuple[dict[tuple[str, str], Section], list[str]]:
    """The endpoint sections of the reference, by (method, path), and any problems in its form."""
    sections: dict[tuple[str, str], Section] = {}
    problems: list[str] = []
    current: Section | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        heading = ENDPOINT_HEADING.match(line)
        if heading:
            key = (heading.group(1), heading.group(2))
            if key in sections:
                problems.append(f"line {number}: {key[0]} {key[1]} is documented twice")
            current = sections[key] = Section(number)
            continue
        if SECTION_END.match(line):
            current = None
            continue
        if current is None:
            continue
        current.statuses.update(int(status) for status in SUCCESS.findall(line))
        row = ERROR_ROW.match(line)
        if row:
            current.statuses.add(int(row.group(1)))
            current.codes.add(row.group(2))
    return sections, problems


@dataclass
class Operation:
    statuses: set[int]
    codes: set[str]


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    """Every operation of an OpenAPI document, with its declared statuses and error codes."""
    found: dict[tuple[str, str], Operation] = {}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method.upper() not in HTTP_METHODS:
                continue
            statuses: set[int] = set()
            codes: set[str] = set()
            for status, response in operation.get("responses", {}).items():
                statuses.add(int(status))
                for media in response.get("content", {}).values():
                    for example in media.get("examples", {}).values():
                        code = example.get("value", {}).get("code")
                        if isinstance(code, str):
                            codes.add(code)
            found[(method.upper(), path)] = Operation(statuses, codes)
    return found


async def fetch_published(api: httpx.AsyncClient) -> dict[tuple[str, str], Operation]:
    """The operations of every service's OpenAPI document, read through nginx."""
    found: dict[tuple[str, str], Operation] = {}
    for spec in present_services():
        assert spec.docs is not None, f"{spec.name} publishes no API docs"
        url = spec.docs.removesuffix("/docs") + "/openapi.json"
        answer = await api.get(url)
        assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text[:200]}"
        for key, operation in operations(answer.json()).items():
            assert key not in found, f"{key} is published by two services"
            found[key] = operation
    return found


def documented_http(sections: dict[tuple[str, str], Section]) -> dict[tuple[str, str], Section]:
    return {key: section for key, section in sections.items() if key[0] != "WS"}


def test_the_reference_is_well_formed() -> None:
    sections, problems = read_reference()
    assert not problems, problems
    assert len(documented_http(sections)) >= 10, "the endpoint headings were not found"
    for (method, path), section in sections.items():
        if method == "WS":
            continue
        successes = {status for status in section.statuses if status < 300}
        assert len(successes) == 1, f"line {section.line}: {method} {path} names no single success status"


async def test_every_documented_endpoint_is_served(api: httpx.AsyncClient) -> None:
    published = await fetch_published(api)
    sections, _ = read_reference()
    missing = sorted(
        f"line {section.line}: {method} {path}"
        for (method, path), section in documented_http(sections).items()
        if (method, path) not in published
    )
    assert not missing, f"docs/API.md documents endpoints no service publishes: {missing}"


async def test_every_published_endpoint_is_documented(api: httpx.AsyncClient) -> None:
    published = await fetch_published(api)
    sections, _ = read_reference()
    undocumented = sorted(f"{method} {path}" for method, path in published if (method, path) not in sections)
    assert not undocumented, f"published but not in docs/API.md (add `### METHOD /path`): {undocumented}"


async def test_each_endpoint_documents_its_declared_statuses_and_codes(api: httpx.AsyncClient) -> None:
    published = await fetch_published(api)
    sections, _ = read_reference()
    gaps: list[str] = []
    for key, operation in sorted(published.items()):
        section = sections.get(key)
        if section is None:
            continue  # reported by the test above
        where = f"line {section.line}: {key[0]} {key[1]}"
        if missing := operation.statuses - section.statuses:
            gaps.append(f"{where} lacks statuses {sorted(missing)}")
        if missing_codes := operation.codes - section.codes:
            gaps.append(f"{where} lacks codes {sorted(missing_codes)}")
        declared_success = {status for status in operation.statuses if status < 300}
        documented_success = {status for status in section.statuses if status < 300}
        if declared_success != documented_success:
            gaps.append(f"{where} succeeds with {sorted(declared_success)}, not {sorted(documented_success)}")
    assert not gaps, gaps


def websocket_routes() -> set[str]:
    """The public websocket paths of every service (each also answers without its final slash)."""
    paths: set[str] = set()
    for spec in present_services():
        if not spec.websocket:
            continue
        routes = importlib.import_module(f"{spec.package}.routes")
        for route in routes.router.routes:
            if isinstance(route, APIWebSocketRoute) and route.path.endswith("/"):
                paths.add(route.path)
    return paths


def test_every_websocket_is_documented_and_nothing_else() -> None:
    sections, _ = read_reference()
    documented = {path for method, path in sections if method == "WS"}
    served = websocket_routes()
    assert served, "no websocket routes were found"
    assert documented == served, f"documented {sorted(documented)}, served {sorted(served)}"


async def test_every_documented_websocket_opens_through_nginx(base_url: str) -> None:
    sections, _ = read_reference()
    for method, path in sections:
        if method != "WS":
            continue
        query = WEBSOCKET_QUERY.get(path, lambda: "")()
        url = base_url.replace("http://", "ws://", 1) + path + query
        async with connect(url, open_timeout=10) as websocket:
            first = json.loads(await websocket.recv(decode=True))
        # Each websocket greets a client first: the event gateway's HELLO, the QR hub's hello.
        assert first.get("op") in (10, "hello"), f"{path}: {first}"


def test_the_readme_links_the_reference() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/API.md)" in readme
