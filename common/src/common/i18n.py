"""Error messages in the languages a client may ask for with Accept-Language."""

from typing import Literal

Language = Literal["en", "ru"]
DEFAULT_LANGUAGE: Language = "en"

MESSAGES: dict[str, dict[Language, str]] = {
    "not_authenticated": {"en": "Not authenticated", "ru": "Требуется авторизация"},
    "invalid_token": {
        "en": "Invalid or expired token",
        "ru": "Недействительный или просроченный токен",
    },
    "invalid_credentials": {"en": "Invalid email or password", "ru": "Неверный email или пароль"},
    "username_taken": {"en": "Username is already taken", "ru": "Имя пользователя уже занято"},
    "email_taken": {"en": "Email is already registered", "ru": "Email уже зарегистрирован"},
    "invalid_username": {
        "en": "Username must be 2-32 characters of a-z, 0-9, '_' and '.'",
        "ru": "Имя пользователя: 2-32 символа из a-z, 0-9, '_' и '.'",
    },
    "service_unavailable": {
        "en": "A backing service is unavailable, try again later",
        "ru": "Внутренний сервис недоступен, повторите позже",
    },
    "not_found": {"en": "Not found", "ru": "Не найдено"},
    "user_not_found": {"en": "User not found", "ru": "Пользователь не найден"},
    "chat_not_found": {"en": "Chat not found", "ru": "Переписка не найдена"},
    "message_not_found": {"en": "Message not found", "ru": "Сообщение не найдено"},
    "not_chat_member": {
        "en": "You are not a member of this chat",
        "ru": "Вы не участник этой переписки",
    },
    "chat_with_self": {
        "en": "You cannot start a chat with yourself",
        "ru": "Нельзя начать переписку с самим собой",
    },
    "too_many_requests": {"en": "Too many requests", "ru": "Слишком много запросов"},
    "file_too_large": {"en": "File is too large", "ru": "Файл слишком большой"},
    "unsupported_media_type": {
        "en": "Unsupported image type: use PNG, JPEG, GIF or WebP",
        "ru": "Неподдерживаемый формат: используйте PNG, JPEG, GIF или WebP",
    },
    "invalid_image": {
        "en": "The file is not a valid image",
        "ru": "Файл не является корректным изображением",
    },
    "invalid_ticket": {
        "en": "Invalid or expired ticket",
        "ru": "Недействительный или просроченный билет",
    },
    "yandex_token_rejected": {"en": "Yandex rejected the token", "ru": "Яндекс отклонил токен"},
    "yandex_unavailable": {"en": "Yandex ID is unavailable", "ru": "Яндекс ID недоступен"},
    "yandex_user_not_found": {
        "en": "No user is registered with this Yandex ID",
        "ru": "Нет пользователя, зарегистрированного через этот Яндекс ID",
    },
    "yandex_already_registered": {
        "en": "This Yandex account or its email is already registered",
        "ru": "Этот аккаунт Яндекса или его email уже зарегистрирован",
    },
    "yandex_not_configured": {
        "en": "Yandex ID is not configured on this server",
        "ru": "Вход через Яндекс ID на этом сервере не настроен",
    },
    "internal_error": {"en": "Internal server error", "ru": "Внутренняя ошибка сервера"},
}


def pick_language(accept_language: str | None) -> Language:
    """The first supported language in Accept-Language order (q-values respected)."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()[:2]))
    for negative_quality, _, primary in sorted(ranked):
        if negative_quality < 0 and primary in ("en", "ru"):
            return "ru" if primary == "ru" else "en"
    return DEFAULT_LANGUAGE


def translate(key: str, language: Language) -> str:
    entry = MESSAGES.get(key)
    if entry is None:
        return key
    return entry.get(language) or entry[DEFAULT_LANGUAGE]
