from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError

from common.db import EngineDep
from common.errors import AppError
from common.identity import CurrentUserId
from users_service import repository
from users_service.schemas import NewUser, Profile, UserObject

router = APIRouter(tags=["users"])
internal = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


@router.get("/users/me/", response_model=Profile)
async def my_profile(user_id: CurrentUserId, engine: EngineDep) -> Profile:
    async with engine.connect() as conn:
        row = await repository.get_user(conn, user_id)
    if row is None:
        raise AppError(404, "user_not_found")
    return Profile.model_validate(row)


@router.get("/users/user/", response_model=list[UserObject])
async def search_users(
    _: CurrentUserId,
    engine: EngineDep,
    username: Annotated[str, Query(min_length=1, max_length=32)],
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> list[UserObject]:
    async with engine.connect() as conn:
        rows = await repository.search_by_prefix(conn, username.strip().lower(), limit)
    return [UserObject.model_validate(row) for row in rows]


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
