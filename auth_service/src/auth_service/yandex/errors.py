from common.errors import AppError, Message


class YandexTokenRejected(AppError):
    """Yandex says the token is not valid (expired, revoked, or issued to another app)."""

    status_code = 401
    code = "yandex_token_rejected"
    message = Message("Yandex rejected the token", "Яндекс отклонил токен")


class YandexUserNotFound(AppError):
    status_code = 404
    code = "yandex_user_not_found"
    message = Message(
        "No user is registered with this Yandex ID",
        "Нет пользователя, зарегистрированного через этот Яндекс ID",
    )


class YandexAlreadyRegistered(AppError):
    status_code = 409
    code = "yandex_already_registered"
    message = Message(
        "This Yandex account or its email is already registered",
        "Этот аккаунт Яндекса или его email уже зарегистрирован",
    )


class YandexUnavailable(AppError):
    """Yandex could not be asked, or answered something that is not a profile."""

    status_code = 502
    code = "yandex_unavailable"
    message = Message("Yandex ID is unavailable", "Яндекс ID недоступен")


class YandexNotConfigured(AppError):
    status_code = 503
    code = "yandex_not_configured"
    message = Message(
        "Yandex ID is not configured on this server", "Вход через Яндекс ID на этом сервере не настроен"
    )
