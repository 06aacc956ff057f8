import re
from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, field_validator

USERNAME_RE = re.compile(r"^[a-z0-9_.]{2,32}$")


class RegisterRequest(BaseModel):
    username: Annotated[str, Field(min_length=2, max_length=32, examples=["bob"])]
    email: Annotated[EmailStr, Field(max_length=254)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    description: Annotated[str | None, Field(max_length=190)] = None
    status: Annotated[str | None, Field(max_length=128)] = None

    @field_validator("username")
    @classmethod
    def _normalise_username(cls, value: str) -> str:
        value = value.lower()
        if not USERNAME_RE.fullmatch(value):
            raise ValueError("username must be 2-32 characters of a-z, 0-9, '_' and '.'")
        return value

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        return value.lower()


class LoginRequest(BaseModel):
    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class Detail(BaseModel):
    detail: str


class TokenResponse(BaseModel):
    token: str
    type: Literal["Bearer"] = "Bearer"
