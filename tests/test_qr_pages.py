"""The QR login pages in a real browser: Debian's Chromium driven by Playwright, a desktop-sized
and a phone-sized context, everything through nginx. Each state a person sees is saved as a
screenshot (`QR_SCREENSHOTS_DIR`, default `.data/screenshots/`); the README shows the ones
committed under docs/screenshots/.

Also here, without a browser: the pages' security headers and that they hold no inline script."""

import io
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import zxingcpp
from PIL import Image, ImageDraw
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from qr_site import qr_site

from devstack import Stack
from devstack.config import REPO_ROOT

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("QR_SCREENSHOTS_DIR") or REPO_ROOT / ".data" / "screenshots")
# The desktop context says it is Chrome on Windows, so the phone's "what is asking" is checkable.
DESKTOP_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TOKEN_KEY = "chat.token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
WAIT_MS = 20_000

pytestmark = pytest.mark.usefixtures("stack")


# ---- no browser: headers and markup ----------------------------------------------------------
@pytest.mark.parametrize("path", ["/qr/", "/qr/approve/", "/qr/js/desktop.js", "/qr/style.css"])
async def test_pages_carry_strict_security_headers(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 200
    headers = response.headers
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in headers["Permissions-Policy"]
    expected_type = {".js": "text/javascript", ".css": "text/css"}.get(Path(path).suffix, "text/html")
    assert headers["Content-Type"].startswith(expected_type)


async def test_pages_are_only_read(api: httpx.AsyncClient) -> None:
    for path in ("/qr/", "/qr/approve/", "/qr/style.css"):
        assert (await api.post(path, content=b"x")).status_code == 403, path
    # Nothing but a page or a file: a folder of scripts is not found, like any other path.
    for path in ("/qr/nothing-here", "/qr/js/", "/qr/vendor/", "/qr/nothing/"):
        missing = await api.get(path)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found"), path
    redirected = await api.get("/qr/approve?client_id=abc", follow_redirects=False)
    assert redirected.status_code == 301
    assert redirected.headers["Location"] == "/qr/approve/?client_id=abc"


class InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.found.append("script without src")
        if tag == "style":
            self.found.append("<style> element")
        self.found += [f"{tag}[{name}]" for name in names if name.startswith("on") or name == "style"]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("inline script text")


@pytest.mark.parametrize("page", sorted((REPO_ROOT / "web").rglob("*.html")), ids=str)
def test_no_inline_script_or_style(page: Path) -> None:
    parser = InlineCode()
    parser.feed(page.read_text())
    assert parser.found == []


# ---- in the browser --------------------------------------------------------------------------
@dataclass
class Pages:
    browser: Browser
    base_url: str
    problems: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    async def _context(self, **options: Any) -> Page:
        context = await self.browser.new_context(**options)
        self.contexts.append(context)
        page = await context.new_page()

        def on_console(message: Any) -> None:
            if "Content Security Policy" in message.text:
                self.problems.append(f"CSP: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        return page

    async def desktop(self) -> Page:
        return await self._context(viewport={"width": 1000, "height": 720}, user_agent=DESKTOP_AGENT)

    async def phone(self, token: str | None = None) -> Page:
        storage: Any = {"cookies": [], "origins": []}
        if token is not None:
            storage["origins"] = [
                {"origin": self.base_url, "localStorage": [{"name": TOKEN_KEY, "value": token}]}
            ]
        return await self._context(
            viewport={"width": 390, "height": 760},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            storage_state=storage,
        )


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        message = (
            f"Chromium is missing ({CHROMIUM}): the browser tests need Debian's chromium package. "
            "scripts/bootstrap.sh installs it when run as root; or: apt-get install chromium"
        )
        if os.environ.get("CI") or os.geteuid() == 0:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def pages(chromium: Browser, base_url: str) -> AsyncIterator[Pages]:
    opened = Pages(chromium, base_url)
    yield opened
    for context in opened.contexts:
        await context.close()
    assert opened.problems == []


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"qr-{name}.png")


async def in_state(page: Page, state: str) -> None:
    await expect(page.locator("body")).to_have_attribute("data-state", state, timeout=WAIT_MS)


async def open_desktop(pages: Pages, base_url: str) -> tuple[Page, str]:
    """The desktop page showing a code; returns it and the URL its QR code holds."""
    desktop = await pages.desktop()
    await desktop.goto(f"{base_url}/qr/")
    await in_state(desktop, "waiting")
    return desktop, await scanned_url(desktop)


async def scanned_url(desktop: Page) -> str:
    """Reads the QR code on the screen, as a phone's camera would."""
    picture = Image.open(io.BytesIO(await desktop.locator("#qr").screenshot()))
    codes = zxingcpp.read_barcodes(picture)
    assert len(codes) == 1
    return str(codes[0].text)


def client_id_of(url: str) -> str:
    match = re.fullmatch(r"http://127\.0\.0\.1:\d+/qr/approve/\?client_id=([a-z2-9]{20})", url)
    assert match, url
    return match.group(1)


async def session_token(page: Page) -> str | None:
    token: str | None = await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")
    return token


async def set_avatar(api: httpx.AsyncClient, user: Any) -> str:
    """A small picture for the user, so the screenshots show an avatar where one is known."""
    image = Image.new("RGB", (96, 96), (255, 183, 77))
    draw = ImageDraw.Draw(image)
    draw.ellipse((26, 14, 70, 58), fill=(121, 85, 72))
    draw.ellipse((12, 58, 84, 130), fill=(0, 137, 123))
    picture = io.BytesIO()
    image.save(picture, "PNG")
    uploaded = await api.patch(
        "/users/upload-avatar/", headers=user.headers, files={"avatar_file": ("me.png", picture.getvalue())}
    )
    assert uploaded.status_code == 200, uploaded.text
    return str((await api.get("/users/me/", headers=user.headers)).json()["avatar_url"])


async def test_approve_logs_the_desktop_in_as_the_phone_user(
    pages: Pages, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    user = await make_user()
    avatar_url = await set_avatar(api, user)
    desktop, url = await open_desktop(pages, base_url)
    client_id = client_id_of(url)
    # The short text code is the same client_id, in groups a person can type.
    assert (await desktop.locator("#text-code").inner_text()).replace(" ", "") == client_id
    await shot(desktop, "desktop-waiting")

    phone = await pages.phone(user.token)
    await phone.goto(url)
    await in_state(phone, "request")
    await expect(phone.locator("#req-browser")).to_have_text("Chrome 131")
    await expect(phone.locator("#req-os")).to_have_text("Windows 10/11")
    await expect(phone.locator("#req-address")).to_have_text("127.0.0.1")
    await expect(phone.locator("[data-view=request] .user-name")).to_have_text(user.username)
    await shot(phone, "phone-request")

    # Before anything is approved the desktop shows who scanned it, avatar included.
    await in_state(desktop, "scanned")
    await expect(desktop.locator("#scanned-who .user-name")).to_have_text(user.username)
    await expect(desktop.locator("#scanned-who img.avatar")).to_have_attribute("src", avatar_url)
    await shot(desktop, "desktop-scanned")

    await phone.click("#approve")
    await in_state(phone, "approved")
    await shot(phone, "phone-approved")

    # The desktop asks before it keeps anything.
    await in_state(desktop, "confirm")
    await expect(desktop.locator("[data-view=confirm] .user-name")).to_have_text(user.username)
    assert await session_token(desktop) is None
    await shot(desktop, "desktop-confirm")

    await desktop.click("#confirm-yes")
    await in_state(desktop, "logged-in")
    await expect(desktop.locator("[data-view=logged-in] .user-name")).to_have_text(user.username)
    await shot(desktop, "desktop-logged-in")
    token = await session_token(desktop)
    assert token is not None
    me = await api.get("/users/me/", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["id"] == user.id

    # The token is kept for the browser session: a reload is still logged in.
    await desktop.reload()
    await in_state(desktop, "logged-in")


async def test_deny_tells_both_and_a_new_code_starts_over(
    pages: Pages, base_url: str, make_user: Any
) -> None:
    user = await make_user()
    desktop, url = await open_desktop(pages, base_url)
    phone = await pages.phone(user.token)
    await phone.goto(url)
    await in_state(phone, "request")
    await phone.click("#deny")
    await in_state(phone, "denied")
    await in_state(desktop, "denied")
    await shot(phone, "phone-denied")
    await shot(desktop, "desktop-denied")
    assert await session_token(desktop) is None

    await desktop.click("[data-view=denied] [data-new-code]")
    await in_state(desktop, "waiting")
    assert client_id_of(await scanned_url(desktop)) != client_id_of(url)


async def test_someone_else_took_the_code(
    pages: Pages, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    owner = await make_user()
    intruder = await make_user()
    desktop, url = await open_desktop(pages, base_url)

    # Whoever saw the code joins first; the desktop shows whose account that is.
    stranger = await pages.phone(intruder.token)
    await stranger.goto(url)
    await in_state(stranger, "request")
    await in_state(desktop, "scanned")
    await expect(desktop.locator("#scanned-who .user-name")).to_have_text(intruder.username)

    # The real phone is told plainly.
    phone = await pages.phone(owner.token)
    await phone.goto(url)
    await in_state(phone, "taken")
    await expect(phone.locator("[data-view=taken]")).to_contain_text("Another device took this code")
    await expect(phone.locator("[data-view=taken]")).to_contain_text("make a new code")
    await shot(phone, "phone-taken")

    # The stranger approves: the desktop names the stranger's account and asks first.
    exchanged: list[str] = []

    async def remember(response: Any) -> None:
        if "/auth/qr_auth/" in response.url and response.status == 200:
            exchanged.append((await response.json())["token"])

    desktop.on("response", remember)
    await stranger.click("#approve")
    await in_state(desktop, "confirm")
    await expect(desktop.locator("[data-view=confirm] .user-name")).to_have_text(intruder.username)
    await shot(desktop, "desktop-confirm-someone-else")
    await desktop.click("#confirm-no")
    await in_state(desktop, "cancelled")
    await shot(desktop, "desktop-cancelled")
    assert await session_token(desktop) is None
    # The session the stranger's approval made is ended, not merely forgotten.
    assert len(exchanged) == 1
    me = await api.get("/users/me/", headers={"Authorization": f"Bearer {exchanged[0]}"})
    assert me.status_code == 401


async def test_a_phone_that_is_not_logged_in_yet(
    pages: Pages, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    user = await make_user()
    desktop, url = await open_desktop(pages, base_url)
    code = await desktop.locator("#text-code").inner_text()

    # No camera: the person opens the approve page and types the code shown on the computer.
    phone = await pages.phone()
    await phone.goto(f"{base_url}/qr/approve/")
    await in_state(phone, "no-code")
    await phone.fill("#code", code.upper())
    await phone.click("#code-form button[type=submit]")

    await in_state(phone, "login")
    await shot(phone, "phone-login")
    await phone.fill("#email", user.email)
    await phone.fill("#password", "not the password")
    await phone.click("#login-submit")
    await expect(phone.locator("#login-error")).to_have_text("Wrong email or password.", timeout=WAIT_MS)
    await phone.fill("#password", user.password)
    await phone.click("#login-submit")

    await in_state(phone, "request")
    assert phone.url == url
    await in_state(desktop, "scanned")
    await expect(desktop.locator("#scanned-who .user-name")).to_have_text(user.username)
    await phone.click("#approve")
    await in_state(desktop, "confirm")
    await desktop.click("#confirm-yes")
    await in_state(desktop, "logged-in")
    token = await session_token(desktop)
    me = await api.get("/users/me/", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["id"] == user.id
    # The phone stays logged in for next time.
    assert await phone.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is not None


async def test_expiry_a_new_code_and_a_lost_server(pages: Pages, stack: Stack, make_user: Any) -> None:
    user = await make_user()
    # A site of its own whose hubs live 3 s, so no other test waits on a short lifetime.
    with qr_site(stack, QR_HUB_TTL="3") as site:
        pages.base_url = site.base_url
        desktop, url = await open_desktop(pages, site.base_url)
        await in_state(desktop, "expired")
        await shot(desktop, "desktop-expired")

        # A phone that opens the old code learns that no computer shows it any more.
        phone = await pages.phone(user.token)
        await phone.goto(url)
        await in_state(phone, "inactive")
        await shot(phone, "phone-inactive")

        await desktop.click("[data-view=expired] [data-new-code]")
        await in_state(desktop, "waiting")
        assert client_id_of(await scanned_url(desktop)) != client_id_of(url)

        # The websocket service goes away: the page says so instead of waiting forever.
        site.instance.stop()
        await in_state(desktop, "unreachable")
        await shot(desktop, "desktop-unreachable")
        await desktop.click("[data-view=unreachable] [data-new-code]")
        await in_state(desktop, "unreachable")
