from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from common.rules import USERNAME_PATTERN

Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]


class UserObject(BaseModel):
    id: int
    username: str
    avatar_url: str | None


class Profile(UserObject):
    description: str
    status: str
    created_at: datetime


class NewUser(BaseModel):
    """Body of the internal create call the auth service makes during registration."""

    username: Username
    description: Annotated[str, Field(max_length=190)] = ""
    status: Annotated[str, Field(max_length=128)] = ""
    locale: Annotated[str, Field(pattern=r"^(en|ru)$")] = "en"
    # An external picture (a Yandex ID avatar) until the user uploads one of their own.
    avatar_url: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://")] = None


class AvatarUploaded(BaseModel):
    detail: str
    avatar_url: str
