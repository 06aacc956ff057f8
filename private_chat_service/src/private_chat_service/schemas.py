import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from common.ids import MAX_ID, json_integer

MAX_TEXT_LENGTH = 2000
MAX_NONCE_LENGTH = 64


# Ids are PostgreSQL bigints: anything outside is a bad value (422), never a database error. Only
# a JSON integer is an id: not true/false (Python counts them as ints), "5", "+5" or 5.0.
Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(json_integer)]


# Characters that draw nothing although Unicode counts them neither as spaces nor as format
# characters: the braille blank and the Hangul fillers.
_DRAWS_NOTHING = frozenset("\u2800\u3164\u115f\u1160\uffa0")


def _blank(value: str) -> bool:
    """Nothing a reader could see: whitespace, invisible format characters (zero-width space,
    joiners, the byte order mark: Unicode's Cf) and the blanks above only. Stops at the first
    visible character."""
    return all(
        char.isspace() or char in _DRAWS_NOTHING or unicodedata.category(char) == "Cf" for char in value
    )


def _clean_text(value: str) -> str:
    value = value.strip()
    if _blank(value):
        raise ValueError("text must not be blank")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"text must be at most {MAX_TEXT_LENGTH} characters after trimming")
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return value


# 1-2000 characters after trimming; stored trimmed.
MessageText = Annotated[str, AfterValidator(_clean_text)]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


# A client's send-once key (API.md 18): a JSON string of 1-64 characters, compared exactly (not
# trimmed). A number is refused, not converted: "1" and 1 must not be two spellings of one key.
Nonce = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NONCE_LENGTH), AfterValidator(_storable)]


class StartChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    recipient_id: Id
    text: MessageText | None = None


class StartChatResponse(BaseModel):
    chat_id: int
    message_id: int | None = None


class AddMessageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: MessageText
    message_answer_id: Id | None = None
    nonce: Nonce | None = None


class EditMessageRequest(BaseModel):
    """Only `text` can change. Any other field is refused (422) rather than ignored, so that a
    client never believes it changed something (a reply target, say) that it did not."""

    model_config = ConfigDict(extra="forbid")

    text: MessageText


class AddMessageResponse(BaseModel):
    detail: Literal["Success add."] = "Success add."
    id: int


class UserObject(BaseModel):
    id: int
    username: str
    avatar_url: str | None


class Message(BaseModel):
    id: int
    text: str
    answer: int | None
    chat_id: int
    message_owner: UserObject
    created_at: datetime
    edited_at: datetime | None


class ChatInfo(BaseModel):
    id: int
    chat_starter: UserObject
    chat_recipient: UserObject
    created_at: datetime
    last_activity_at: datetime


class ChatListItem(BaseModel):
    id: int
    companion: UserObject
    last_activity_at: datetime
