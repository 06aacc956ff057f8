"""The chat service's failures (UserNotFound, for a missing recipient, is shared: common.errors)."""

from common.errors import AppError, Message


class ChatWithSelf(AppError):
    status_code = 400
    code = "chat_with_self"
    message = Message("You cannot start a chat with yourself", "Нельзя начать переписку с самим собой")


class NotChatMember(AppError):
    status_code = 403
    code = "not_chat_member"
    message = Message("You are not a member of this chat", "Вы не участник этой переписки")


class ChatNotFound(AppError):
    status_code = 404
    code = "chat_not_found"
    message = Message("Chat not found", "Переписка не найдена")


class MessageNotFound(AppError):
    status_code = 404
    code = "message_not_found"
    message = Message("Message not found", "Сообщение не найдено")


class NotMessageAuthor(AppError):
    status_code = 403
    code = "not_message_author"
    message = Message("Only the author can change this message", "Изменить сообщение может только его автор")
