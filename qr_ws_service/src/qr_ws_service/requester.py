"""What the phone is told about the browser that opened a hub: browser and OS from its user agent,
its address and when it opened the hub. A person approving a login compares this with the
computer in front of them, so it is worded for people and never trusted for anything else."""

import re
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket

MAX_USER_AGENT = 512
MAX_ADDRESS = 64

# First match wins: browsers built on Chromium name Chrome too, and every one of them says Safari.
_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"\b(?:OPR|Opera)/(\d+)")),
    ("Yandex Browser", re.compile(r"\bYaBrowser/(\d+)")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/(\d+)")),
    ("Vivaldi", re.compile(r"\bVivaldi/(\d+)")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome (headless)", re.compile(r"\bHeadlessChrome/(\d+)")),
    ("Chromium", re.compile(r"\bChromium/(\d+)")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"\bVersion/(\d+)(?:\.\d+)*(?: Mobile/\S+)? Safari/")),
)

_IOS = re.compile(r"\b(?:iPhone|CPU) OS (\d+)[_.](\d+)")
_IPAD = re.compile(r"\biPad\b")
_ANDROID = re.compile(r"\bAndroid (\d+(?:\.\d+)?)")
_WINDOWS = re.compile(r"\bWindows NT (\d+\.\d+)")
_MACOS = re.compile(r"\bMac OS X (\d+)[_.](\d+)")
# Windows 11 still says NT 10.0, so both are "Windows 10/11".
_WINDOWS_NAMES = {"10.0": "10/11", "6.3": "8.1", "6.2": "8", "6.1": "7"}


def describe_browser(user_agent: str) -> str:
    for name, pattern in _BROWSERS:
        match = pattern.search(user_agent)
        if match:
            return f"{name} {match.group(1)}"
    return "Unknown browser"


def describe_os(user_agent: str) -> str:
    if match := _IOS.search(user_agent):
        system = "iPadOS" if _IPAD.search(user_agent) else "iOS"
        return f"{system} {match.group(1)}.{match.group(2)}"
    if match := _ANDROID.search(user_agent):
        return f"Android {match.group(1)}"
    if match := _WINDOWS.search(user_agent):
        version = match.group(1)
        return f"Windows {_WINDOWS_NAMES.get(version, 'NT ' + version)}"
    if "CrOS" in user_agent:
        return "ChromeOS"
    if match := _MACOS.search(user_agent):
        return f"macOS {match.group(1)}.{match.group(2)}"
    if "Linux" in user_agent or "X11" in user_agent:
        return "Linux"
    return "Unknown system"


def describe_requester(websocket: WebSocket, opened_at: datetime) -> dict[str, Any]:
    """The `login request` op's fields for the browser behind `websocket`.

    The address is nginx's X-Real-IP (nginx overwrites whatever a client sends); without nginx
    in front, the peer's own address.
    """
    user_agent = _printable(websocket.headers.get("user-agent", ""))[:MAX_USER_AGENT]
    address = websocket.headers.get("x-real-ip") or (websocket.client.host if websocket.client else "")
    return {
        "browser": describe_browser(user_agent),
        "os": describe_os(user_agent),
        "user_agent": user_agent,
        "address": _printable(address)[:MAX_ADDRESS] or None,
        "opened_at": opened_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _printable(value: str) -> str:
    return "".join(char for char in value if char.isprintable())
