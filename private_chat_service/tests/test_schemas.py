"""Request bodies: what the service accepts and how it normalises it."""

import pytest
from pydantic import ValidationError

from private_chat_service.schemas import AddMessageRequest, StartChatRequest


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("hi", "hi"),
        ("  hi  ", "hi"),
        ("\n\tline one\nline two \u3000", "line one\nline two"),
        ("x" * 2000, "x" * 2000),
        ("  " + "я" * 2000 + "\n", "я" * 2000),
        ("😀" * 2000, "😀" * 2000),
        # Invisible characters beside visible ones stay: a ZWJ emoji sequence, a BOM, a ZWSP.
        ("👩\u200d💻", "👩\u200d💻"),
        ("\ufeffhi\u200b", "\ufeffhi\u200b"),
    ],
)
def test_text_is_trimmed_and_kept(raw: str, stored: str) -> None:
    assert AddMessageRequest(text=raw).text == stored
    assert StartChatRequest(recipient_id=1, text=raw).text == stored


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\t\u3000",
        "\u200b",
        "\ufeff \u200d\u2060",
        "\u2800",
        "\u3164 \u3164",
        "x" * 2001,
        "a\x00b",
        "broken \ud800",
    ],
)
def test_bad_text_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        AddMessageRequest(text=text)
    with pytest.raises(ValidationError):
        StartChatRequest(recipient_id=1, text=text)


@pytest.mark.parametrize("value", [0, -1, 2**63, 1.5, 5.0, "abc", "5", None, True, False, [1]])
def test_bad_ids_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        StartChatRequest.model_validate({"recipient_id": value})
    if value is None:
        return  # no reply: allowed
    with pytest.raises(ValidationError):
        AddMessageRequest.model_validate({"text": "hi", "message_answer_id": value})


def test_optional_fields() -> None:
    assert StartChatRequest.model_validate({"recipient_id": 5}).text is None
    assert AddMessageRequest.model_validate({"text": "hi"}).message_answer_id is None
    assert AddMessageRequest.model_validate({"text": "hi", "message_answer_id": 2**63 - 1}).message_answer_id
