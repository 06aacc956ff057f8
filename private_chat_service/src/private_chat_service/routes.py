from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BeforeValidator

from common.errors import NotAuthenticated, TooManyRequests, UserNotFound, error_responses
from common.identity import CurrentUserId
from common.ids import MAX_ID, one_spelling, plain_count
from private_chat_service.dependencies import ServiceDep
from private_chat_service.errors import (
    ChatNotFound,
    ChatWithSelf,
    MessageNotFound,
    NotChatMember,
    NotMessageAuthor,
)
from private_chat_service.limits import SendLimited, StartChatLimited
from private_chat_service.schemas import (
    AddMessageRequest,
    AddMessageResponse,
    ChatInfo,
    ChatListItem,
    EditMessageRequest,
    Message,
    StartChatRequest,
    StartChatResponse,
)


class JsonBytes(Response):
    """JSON from plain data, without a second validation against the route's response_model (the
    hot paths build exactly that shape). Timestamps as ISO 8601 with `Z`, as the models write them."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


# One spelling per id: "+5", "05" or "٥" is not chat 5 (common.ids.one_spelling).
ChatId = Annotated[int, Path(ge=1, le=MAX_ID), BeforeValidator(one_spelling)]
MessageId = ChatId  # the same rule for every id in a path
Cursor = Annotated[int | None, Query(ge=1, le=MAX_ID), BeforeValidator(one_spelling)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1), BeforeValidator(plain_count)]

router = APIRouter(prefix="/private", tags=["private chats"])


_CHAT_ERRORS = (NotAuthenticated, NotChatMember, ChatNotFound)

# Each path answers with and without the trailing slash (API.md writes some of each); the
# variant not in API.md is hidden from the docs. A redirect would go through nginx's Host.


@router.post(
    "/start-chat/",
    response_model=StartChatResponse,
    responses=error_responses(ChatWithSelf, NotAuthenticated, UserNotFound, TooManyRequests),
)
@router.post("/start-chat", response_model=StartChatResponse, include_in_schema=False)
async def start_chat(
    limited: StartChatLimited, body: StartChatRequest, user_id: CurrentUserId, service: ServiceDep
) -> StartChatResponse:
    """The chat of you and `recipient_id` (the same one whoever starts it); `text` is added as a message.

    Rate limited per user (START_CHAT_RATE_LIMIT, default 10 a minute): X-RateLimit-* headers on
    every answer, 429 with Retry-After past the limit."""
    chat_id, message_id = await service.start_chat(user_id, recipient_id=body.recipient_id, text=body.text)
    return StartChatResponse(chat_id=chat_id, message_id=message_id)


@router.get("/chat-list/", response_model=list[ChatListItem], responses=error_responses(NotAuthenticated))
@router.get("/chat-list", response_model=list[ChatListItem], include_in_schema=False)
async def chat_list(
    user_id: CurrentUserId,
    service: ServiceDep,
    limit: Annotated[int | None, Query(ge=1, le=1000), BeforeValidator(plain_count)] = None,
    offset: Offset = 0,
) -> Response:
    """Your chats, the most recently active first (all of them unless `limit` is given)."""
    # Serialised straight from plain rows (the shape of list[ChatListItem], which the docs show).
    return JsonBytes(await service.chat_list(user_id, limit=limit, offset=offset))


@router.get("/{chat_id}/messages", response_model=list[Message], responses=error_responses(*_CHAT_ERRORS))
@router.get("/{chat_id}/messages/", response_model=list[Message], include_in_schema=False)
async def messages(
    chat_id: ChatId,
    user_id: CurrentUserId,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=100), BeforeValidator(plain_count)] = 50,
    offset: Offset = 0,
    before: Cursor = None,
    after: Cursor = None,
) -> Response:
    """Newest first. `before=<id>`: the page of older messages right below that id; `after=<id>`:
    the page of newer messages right above it (still listed newest first)."""
    page = await service.messages_json(
        user_id, chat_id, limit=limit, offset=offset, before=before, after=after
    )
    # Serialised straight from plain rows (the shape of list[Message], which the docs show).
    return JsonBytes(page)


@router.get("/{chat_id}/info/", response_model=ChatInfo, responses=error_responses(*_CHAT_ERRORS))
@router.get("/{chat_id}/info", response_model=ChatInfo, include_in_schema=False)
async def chat_info(chat_id: ChatId, user_id: CurrentUserId, service: ServiceDep) -> Response:
    return JsonBytes(await service.chat_info(user_id, chat_id))  # ChatInfo's shape


@router.post(
    "/{chat_id}/typing/", status_code=204, response_class=Response, responses=error_responses(*_CHAT_ERRORS)
)
@router.post("/{chat_id}/typing", status_code=204, response_class=Response, include_in_schema=False)
async def typing(chat_id: ChatId, user_id: CurrentUserId, service: ServiceDep) -> Response:
    """Tell the other member you are typing: a TYPING_START event (API.md 19, 20)."""
    await service.typing(user_id, chat_id)
    return Response(status_code=204)


@router.post(
    "/add-message/{chat_id}/",
    response_model=AddMessageResponse,
    responses=error_responses(*_CHAT_ERRORS, MessageNotFound, TooManyRequests),
)
@router.post("/add-message/{chat_id}", response_model=AddMessageResponse, include_in_schema=False)
async def add_message(
    limited: SendLimited,
    chat_id: ChatId,
    body: AddMessageRequest,
    user_id: CurrentUserId,
    service: ServiceDep,
) -> Response:
    """`nonce` (1-64 characters): sending again with the same nonce in this chat within 10 minutes
    stores nothing and answers as the first send did (the first message's `id`).

    Rate limited per user per chat (SEND_RATE_LIMIT, default 5 per 5 seconds): X-RateLimit-*
    headers on every answer, 429 with Retry-After past the limit, and then nothing is stored."""
    message_id = await service.add_message(
        user_id, chat_id, text=body.text, answer_id=body.message_answer_id, nonce=body.nonce
    )
    return JsonBytes({"detail": "Success add.", "id": message_id})  # AddMessageResponse's shape


_MESSAGE_ERRORS = (*_CHAT_ERRORS, MessageNotFound)
_MESSAGE_PATH = "/{chat_id}/messages/{message_id}"


@router.get(f"{_MESSAGE_PATH}/", response_model=Message, responses=error_responses(*_MESSAGE_ERRORS))
@router.get(_MESSAGE_PATH, response_model=Message, include_in_schema=False)
async def one_message(
    chat_id: ChatId, message_id: MessageId, user_id: CurrentUserId, service: ServiceDep
) -> Response:
    """One message of the chat; 404 when the chat has no such message (or it was deleted)."""
    return JsonBytes(await service.message_json(user_id, chat_id, message_id))


@router.patch(
    f"{_MESSAGE_PATH}/",
    response_model=Message,
    responses=error_responses(*_MESSAGE_ERRORS, NotMessageAuthor),
)
@router.patch(_MESSAGE_PATH, response_model=Message, include_in_schema=False)
async def edit_message(
    chat_id: ChatId,
    message_id: MessageId,
    body: EditMessageRequest,
    user_id: CurrentUserId,
    service: ServiceDep,
) -> Response:
    """Your own message gets the new `text` (the same rules as sending) and `edited_at`."""
    edited = await service.edit_message(user_id, chat_id, message_id, text=body.text)
    # The object the statement built for its MESSAGE_UPDATE event, as it is.
    return Response(edited, media_type="application/json")


@router.delete(
    f"{_MESSAGE_PATH}/",
    status_code=204,
    response_class=Response,
    responses=error_responses(*_MESSAGE_ERRORS, NotMessageAuthor),
)
@router.delete(_MESSAGE_PATH, status_code=204, response_class=Response, include_in_schema=False)
async def delete_message(
    chat_id: ChatId, message_id: MessageId, user_id: CurrentUserId, service: ServiceDep
) -> Response:
    """Your own message is deleted: gone from pages and from the message route; replies keep its
    id as their `answer`."""
    await service.delete_message(user_id, chat_id, message_id)
    return Response(status_code=204)
