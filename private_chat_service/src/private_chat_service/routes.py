from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from common.identity import CurrentUserId
from private_chat_service.schemas import (
    MAX_ID,
    AddMessageRequest,
    AddMessageResponse,
    ChatInfo,
    ChatListItem,
    Message,
    StartChatRequest,
    StartChatResponse,
)
from private_chat_service.service import PrivateChatService


def get_service(request: Request) -> PrivateChatService:
    service: PrivateChatService = request.app.state.service
    return service


Service = Annotated[PrivateChatService, Depends(get_service)]
ChatId = Annotated[int, Path(ge=1, le=MAX_ID)]
Cursor = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]

router = APIRouter(prefix="/private", tags=["private chats"])

# Each path answers with and without the trailing slash (API.md writes some of each); the
# variant not in API.md is hidden from the docs. A redirect would go through nginx's Host.


@router.post("/start-chat/", response_model=StartChatResponse)
@router.post("/start-chat", response_model=StartChatResponse, include_in_schema=False)
async def start_chat(body: StartChatRequest, user_id: CurrentUserId, service: Service) -> StartChatResponse:
    """The chat of you and `recipient_id` (the same one whoever starts it); `text` is added as a message."""
    chat_id, message_id = await service.start_chat(user_id, recipient_id=body.recipient_id, text=body.text)
    return StartChatResponse(chat_id=chat_id, message_id=message_id)


@router.get("/chat-list/", response_model=list[ChatListItem])
@router.get("/chat-list", response_model=list[ChatListItem], include_in_schema=False)
async def chat_list(
    user_id: CurrentUserId,
    service: Service,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    offset: Offset = 0,
) -> list[ChatListItem]:
    """Your chats, the most recently active first (all of them unless `limit` is given)."""
    return await service.chat_list(user_id, limit=limit, offset=offset)


@router.get("/{chat_id}/messages", response_model=list[Message])
@router.get("/{chat_id}/messages/", response_model=list[Message], include_in_schema=False)
async def messages(
    chat_id: ChatId,
    user_id: CurrentUserId,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Offset = 0,
    before: Cursor = None,
    after: Cursor = None,
) -> list[Message]:
    """Newest first. `before=<id>`: the page of older messages right below that id; `after=<id>`:
    the page of newer messages right above it (still listed newest first)."""
    return await service.messages(user_id, chat_id, limit=limit, offset=offset, before=before, after=after)


@router.get("/{chat_id}/info/", response_model=ChatInfo)
@router.get("/{chat_id}/info", response_model=ChatInfo, include_in_schema=False)
async def chat_info(chat_id: ChatId, user_id: CurrentUserId, service: Service) -> ChatInfo:
    return await service.chat_info(user_id, chat_id)


@router.post("/add-message/{chat_id}/", response_model=AddMessageResponse)
@router.post("/add-message/{chat_id}", response_model=AddMessageResponse, include_in_schema=False)
async def add_message(
    chat_id: ChatId, body: AddMessageRequest, user_id: CurrentUserId, service: Service
) -> AddMessageResponse:
    message_id = await service.add_message(user_id, chat_id, text=body.text, answer_id=body.message_answer_id)
    return AddMessageResponse(id=message_id)
