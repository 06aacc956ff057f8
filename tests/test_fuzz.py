"""Schemathesis against every service's OpenAPI document, through nginx, with a real token.

Every generated request (valid and invalid, from each operation's declared schema) must get an
answer that is not a 5xx and that matches what the operation declares for that status, and the
stack must keep serving on the same client afterwards. `make test` runs a bounded pass
(FUZZ_EXAMPLES per operation, about two minutes on the 2-core machine); `make fuzz` runs it long.
"""

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from devstack import Stack

# Each prefix nginx routes to a service; `events` only when the stack runs the event gateway.
SERVICES = ("auth", "users", "private", "gateway", "auth_events", "events")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# The fuzzer's own loopback address: nginx's per-address rate limits (log-in, sign-up) then count
# its floods apart from the rest of the suite's requests.
FUZZ_ADDRESS = "127.0.0.77"
# Operations that would end the session the run is authenticated with.
SESSION_ENDERS = r"^/auth/logout(-all)?/$"


class _FromAddress(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (FUZZ_ADDRESS, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture(scope="module")
def fuzz_session(stack: Stack) -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount("http://", _FromAddress())
    yield session
    session.close()


@pytest.fixture(scope="module")
def base_http(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.config.http_port}"


@pytest.fixture(scope="module")
def fuzz_headers(base_http: str, fuzz_session: requests.Session) -> dict[str, str]:
    """A real user's token, from the real sign-up and log-in."""
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    account = {"username": name, "email": f"{name}@example.com", "password": "fuzzing password"}
    registered = fuzz_session.post(f"{base_http}/auth/register/", json=account, timeout=30)
    assert registered.status_code == 200, registered.text
    credentials = {"email": account["email"], "password": account["password"]}
    login = fuzz_session.post(f"{base_http}/auth/login/", json=credentials, timeout=30)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


def _service_schema(stack: Stack, base_http: str, prefix: str) -> Any:
    if prefix == "events" and "events" not in {spec.name for spec in stack.config.services()}:
        pytest.skip("the stack runs no event gateway")
    document = requests.get(f"{base_http}/{prefix}/openapi.json", timeout=30)
    assert document.status_code == 200, document.text
    return schemathesis.openapi.from_dict(document.json()).exclude(path_regex=SESSION_ENDERS)


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _fresh_email(case: schemathesis.Case) -> None:
    """A sign-up whose generated email was taken by an earlier case stops at 409 before the users
    service sees the rest of the body: a unique prefix lets each one through (the generated
    characters, odd ones included, are kept)."""
    body = case.body
    if case.path == "/auth/register/" and isinstance(body, dict) and isinstance(body.get("email"), str):
        body["email"] = f"f{uuid.uuid4().hex[:8]}.{body['email']}"


def _fuzz(
    operation: Any, mode: Any, session: requests.Session, headers: dict[str, str], base: str
) -> int:
    """Runs the operation's examples; how many requests reached nginx."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=os.environ.get("FUZZ_RANDOM") != "1",
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        _fresh_email(case)
        for _ in range(30):
            sent += 1
            response = case.call(base_url=base, session=session, headers=dict(headers), timeout=30)
            # nginx's per-address limit of the log-in and sign-up routes (Retry-After: 1): wait
            # and send the case again, so it reaches the service. The per-email brake (a long
            # Retry-After) is an answer like any other.
            if response.status_code != 429 or response.headers.get("Retry-After") != "1":
                break
            time.sleep(1)
        case.validate_response(response, checks=CHECKS)
        # The client keeps being served (on this connection or, after nginx closed it on an error
        # of the client's, the next one): a known-good request still works.
        check = session.get(f"{base}/users/me/", headers=headers, timeout=30)
        assert check.status_code == 200, f"after {case.method} {case.formatted_path}: {check.text}"

    run()
    return sent


@pytest.mark.parametrize("prefix", SERVICES)
def test_no_input_makes_a_5xx_or_an_undeclared_answer(
    stack: Stack, base_http: str, fuzz_session: requests.Session, fuzz_headers: dict[str, str], prefix: str
) -> None:
    schema = _service_schema(stack, base_http, prefix)
    failures: list[str] = []
    operations = requests_sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # Valid inputs and, as often, inputs that break the declared schema.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent = _fuzz(operation, mode, fuzz_session, fuzz_headers, base_http)
                requests_sent += sent
                if mode == GenerationMode.POSITIVE and sent == 0:
                    failures.append(f"{operation.label}: no request was generated")
            except Unsatisfiable:
                pass  # nothing to break: an operation without parameters or body has no negative case
            except Exception as exc:  # every operation is tried; all failures are reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(f"{prefix}: {operations} operations, {requests_sent} requests")  # shown with -s
    assert operations > 0 or prefix in ("auth_events", "events")
    assert not failures, "\n\n".join(failures)
