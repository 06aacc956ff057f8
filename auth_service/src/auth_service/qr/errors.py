from collections.abc import Mapping
from typing import ClassVar

from common.errors import AppError, Message


class InvalidTicket(AppError):
    status_code = 401
    code = "invalid_ticket"
    message = Message("Invalid or expired ticket", "Недействительный или просроченный билет")
    default_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}
