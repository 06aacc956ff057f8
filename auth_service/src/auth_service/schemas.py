from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, EmailStr, Field, field_validator

from common.rules import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, normalise_username

# RFC 5321 section 4.5.3.1.1; the email validator does not hold addresses to it.
EMAIL_LOCAL_PART_MAX_LENGTH = 64


class RegisterRequest(BaseModel):
    username: Annotated[
        str,
        Field(min_length=USERNAME_MIN_LENGTH, max_length=USERNAME_MAX_LENGTH, examples=["bob"]),
        AfterValidator(normalise_username),
    ]
    email: Annotated[EmailStr, Field(max_length=254)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    description: Annotated[str | None, Field(max_length=190)] = None
    status: Annotated[str | None, Field(max_length=128)] = None

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        if len(value.rpartition("@")[0]) > EMAIL_LOCAL_PART_MAX_LENGTH:
            raise ValueError("the part before the @ is at most 64 characters (RFC 5321)")
        return value.lower()


class LoginRequest(BaseModel):
    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class Detail(BaseModel):
    detail: str


class TokenResponse(BaseModel):
    token: str
    type: Literal["Bearer"] = "Bearer"
