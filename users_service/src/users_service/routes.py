from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from sqlalchemy.exc import IntegrityError

from common.db import EngineDep
from common.errors import AppError
from common.identity import CurrentUserId
from users_service import repository
from users_service.schemas import AvatarUploaded, NewUser, Profile, UserObject
from users_service.service import UsersService

router = APIRouter(tags=["users"])
internal = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


async def get_service(request: Request) -> UsersService:
    service: UsersService = request.app.state.users_service
    return service


ServiceDep = Annotated[UsersService, Depends(get_service)]


@router.get("/users/me/", response_model=Profile)
async def my_profile(user_id: CurrentUserId, service: ServiceDep) -> Profile:
    return Profile.model_validate(await service.profile(user_id))


@router.get("/users/user/", response_model=list[UserObject])
async def search_users(
    _: CurrentUserId,
    service: ServiceDep,
    username: Annotated[str, Query(min_length=1, max_length=32, description="Username prefix")],
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> list[UserObject]:
    """Users whose username starts with `username` (case-insensitive), the exact match first,
    then by username."""
    return [UserObject.model_validate(row) for row in await service.search(username, limit)]


_AVATAR_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a decodable image, or too many pixels"},
    413: {"description": "File over the size limit"},
    415: {"description": "Not PNG, JPEG, GIF or WebP (read from the bytes)"},
    503: {"description": "Storage unavailable; the previous avatar is unchanged"},
}


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
async def create_user(user_id: int, body: NewUser, engine: EngineDep, response: Response) -> UserObject:
    """Called by the auth service only (not routed by nginx). Idempotent for a retried id."""
    try:
        async with engine.begin() as conn:
            created = await repository.insert_user(conn, user_id, body.model_dump())
            row = await repository.get_user(conn, user_id)
    except IntegrityError as exc:
        raise AppError(409, "username_taken") from exc
    assert row is not None
    if not created:
        if row["username"] != body.username:
            raise AppError(409, "username_taken")
        response.status_code = 200
    return UserObject.model_validate(row)


@internal.delete("/users/{user_id}", status_code=204)
async def delete_user(user_id: int, engine: EngineDep) -> Response:
    async with engine.begin() as conn:
        await repository.delete_user(conn, user_id)
    return Response(status_code=204)
