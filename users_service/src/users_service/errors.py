"""The users service's failures (UserNotFound is shared: common.errors)."""

from common.errors import AppError, Message


class InvalidImage(AppError):
    """The bytes start like an image but do not decode, or would decode to too many pixels."""

    status_code = 400
    code = "invalid_image"
    message = Message("The file is not a valid image", "Файл не является корректным изображением")


class FileTooLarge(AppError):
    status_code = 413
    code = "file_too_large"
    message = Message("File is too large", "Файл слишком большой")


class UnsupportedImageType(AppError):
    """The bytes are none of the accepted formats, whatever the name or Content-Type said."""

    status_code = 415
    code = "unsupported_media_type"
    message = Message(
        "Unsupported image type: use PNG, JPEG, GIF or WebP",
        "Неподдерживаемый формат: используйте PNG, JPEG, GIF или WebP",
    )
