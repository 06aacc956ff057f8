"""The auth service's failures (the QR and Yandex ones live in their subpackages)."""

from common.errors import AppError, Message


class InvalidCredentials(AppError):
    """Unknown email, wrong password and a password-less account alike: nothing is enumerated."""

    status_code = 401
    code = "invalid_credentials"
    message = Message("Invalid email or password", "Неверный email или пароль")


class EmailTaken(AppError):
    status_code = 409
    code = "email_taken"
    message = Message("Email is already registered", "Email уже зарегистрирован")
