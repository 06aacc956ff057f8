from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import BeforeValidator

from common.errors import NotAuthenticated, ServiceUnavailable, UserNotFound, error_responses
from common.identity import CurrentUserId
from common.ids import plain_count
from users_service.dependencies import ServiceDep
from users_service.errors import FileTooLarge, InvalidImage, UnsupportedImageType
from users_service.schemas import AvatarUploaded, NewUser, Profile, UserObject

router = APIRouter(tags=["users"])
internal = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


@router.get("/users/me/", response_model=Profile, responses=error_responses(NotAuthenticated, UserNotFound))
async def my_profile(user_id: CurrentUserId, service: ServiceDep) -> Profile:
    return Profile.model_validate(await service.profile(user_id))


@router.get("/users/user/", response_model=list[UserObject], responses=error_responses(NotAuthenticated))
async def search_users(
    _: CurrentUserId,
    service: ServiceDep,
    username: Annotated[str, Query(min_length=1, max_length=32, description="Username prefix")],
    limit: Annotated[int, Query(ge=1, le=100), BeforeValidator(plain_count)] = 25,
) -> list[UserObject]:
    """Users whose username starts with `username` (case-insensitive), the exact match first,
    then by username."""
    return [UserObject.model_validate(row) for row in await service.search(username, limit)]


_AVATAR_ERRORS = error_responses(
    InvalidImage, NotAuthenticated, UserNotFound, FileTooLarge, UnsupportedImageType, ServiceUnavailable
)


@router.patch("/users/upload-avatar/", response_model=AvatarUploaded, responses=_AVATAR_ERRORS)
@router.post(
    "/users/upload-avatar/",
    response_model=AvatarUploaded,
    responses=_AVATAR_ERRORS,
    operation_id="upload_avatar_post",
    description="The same as PATCH (accepted for older clients).",
)
async def upload_avatar(
    user_id: CurrentUserId,
    service: ServiceDep,
    avatar_file: Annotated[UploadFile, File(description="PNG, JPEG, GIF or WebP")],
) -> AvatarUploaded:
    # One byte over the limit is enough to know it is too large.
    data = await avatar_file.read(service.settings.avatar_max_bytes + 1)
    url = await service.upload_avatar(user_id, data)
    return AvatarUploaded(detail="success", avatar_url=url)


@internal.put("/users/{user_id}", status_code=201, response_model=UserObject)
async def create_user(user_id: int, body: NewUser, service: ServiceDep, response: Response) -> UserObject:
    """Called by the auth service only (not routed by nginx). Idempotent for a retried id."""
    row, created = await service.create_user(user_id, body)
    if not created:
        response.status_code = 200
    return UserObject.model_validate(row)


@internal.delete("/users/{user_id}", status_code=204)
async def delete_user(user_id: int, service: ServiceDep) -> Response:
    await service.delete_user(user_id)
    return Response(status_code=204)
