"""Avatar uploads end to end, through nginx, with both storage implementations.

`local` is the session's stack (files under its media folder, served by nginx at /media/).
`s3` is a second stack started by this module with S3_BUCKET set, talking over HTTP to moto's
standalone S3 server, also started here; its avatar URLs point at that server.
"""

import asyncio
import hashlib
import io
import os
import shutil
import stat
import struct
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image
from polite_client import post_retrying

from devstack import Stack, StackConfig
from devstack.config import free_port
from devstack.stack import StackError

BUCKET = "chat-avatars"
MIB = 1024 * 1024


# ---- images -------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")


def random_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """A PNG unlike any other (distinct content-addressed keys)."""
    return encode(Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)), "PNG")


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"
    exif[0x0110] = "SecretModel"
    exif[0x0112] = 6  # displayed rotated by 90°
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 21.0), 3: "E", 4: (37.0, 37.0, 4.0)}
    data = encode(Image.new("RGB", (3000, 2000), (20, 120, 220)), "JPEG", exif=exif.tobytes())
    parsed = Image.open(io.BytesIO(data)).getexif()
    assert parsed.get_ifd(0x8825), "the fixture JPEG must carry GPS tags"
    return data


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb's shape."""
    data = bytearray(png((1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ---- the two backends ---------------------------------------------------------------------


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class Backend:
    name: str
    stack: Stack
    s3: Any = None
    moto: MotoServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.config.http_port}"

    @property
    def media_root(self) -> Path:
        return self.stack.config.data_dir / "media"

    def url_prefix(self, user_id: int) -> str:
        if self.moto is not None:
            return f"{self.moto.endpoint}/{BUCKET}/avatars/{user_id}/"
        return f"{self.base_url}/media/avatars/{user_id}/"

    def stored_keys(self, user_id: int) -> set[str]:
        """Every object (or file, temporary ones included) under the user's avatar folder."""
        prefix = f"avatars/{user_id}/"
        if self.s3 is not None:
            listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            return {item["Key"] for item in listing.get("Contents", [])}
        folder = self.media_root / prefix
        return {prefix + path.name for path in folder.iterdir()} if folder.exists() else set()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_backend(moto_server: MotoServer) -> Iterator[Backend]:
    credentials = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}
    client = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1", **credentials)
    client.create_bucket(Bucket=BUCKET)
    data_dir = Path(tempfile.mkdtemp(prefix="chat-e2e-s3-"))
    data_dir.chmod(0o755)
    env = {
        "LOG_LEVEL": "INFO",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": moto_server.endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": credentials["aws_access_key_id"],
        "S3_SECRET_ACCESS_KEY": credentials["aws_secret_access_key"],
        "S3_PUBLIC_BASE_URL": f"{moto_server.endpoint}/{BUCKET}",
        # The bucket is private, as on a real S3: each object is made readable by its ACL.
        "S3_OBJECT_ACL": "public-read",
    }
    stack = Stack(StackConfig.for_tests(data_dir, qr_instances=1, env=env))
    try:
        stack.start()
    except StackError as exc:
        pytest.fail(f"S3 stack did not start: {exc}\n{stack.tail_log('users')}", pytrace=False)
    yield Backend("s3", stack, s3=client, moto=moto_server)
    stack.stop()
    client.close()
    if not os.environ.get("KEEP_TEST_DATA"):
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return Backend("local", request.getfixturevalue("stack"))
    backend: Backend = request.getfixturevalue("s3_backend")
    return backend


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.base_url, timeout=60) as http:
        yield http


@pytest.fixture
async def backend_db(backend: Backend) -> AsyncIterator[asyncpg.Connection]:
    assert backend.stack.database_url
    conn = await asyncpg.connect(backend.stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    yield conn
    await conn.close()


@dataclass
class Member:
    id: int
    headers: dict[str, str]


async def new_member(client: httpx.AsyncClient) -> Member:
    name = "av" + uuid.uuid4().hex[:12]
    credentials = {"email": f"{name}@example.com", "password": "correct horse battery"}
    for url, body in (("/auth/register/", {"username": name, **credentials}), ("/auth/login/", credentials)):
        response = await post_retrying(client, url, json=body)
        assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    me = await client.get("/users/me/", headers=headers)
    assert me.status_code == 200, me.text
    return Member(me.json()["id"], headers)


async def upload(
    client: httpx.AsyncClient,
    member: Member,
    data: bytes,
    *,
    method: str = "PATCH",
    filename: str = "avatar.png",
    content_type: str = "image/png",
    field: str = "avatar_file",
) -> httpx.Response:
    return await client.request(
        method,
        "/users/upload-avatar/",
        files={field: (filename, data, content_type)},
        headers=member.headers,
    )


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(url)


async def avatar_row(db: asyncpg.Connection, user_id: int) -> tuple[str | None, str | None]:
    row = await db.fetchrow("SELECT avatar_url, avatar_key FROM users.users WHERE id = $1", user_id)
    return row["avatar_url"], row["avatar_key"]


# ---- tests --------------------------------------------------------------------------------


async def test_upload_is_served_and_replaces_the_old_one(backend, client, backend_db) -> None:
    member = await new_member(client)
    first = await upload(client, member, png((1500, 600)))
    assert first.status_code == 200, first.text
    assert first.json()["detail"] == "success"
    first_url = first.json()["avatar_url"]
    assert first_url.startswith(backend.url_prefix(member.id))

    served = await fetch(first_url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(served.content))
    assert image.format == "PNG"
    assert max(image.size) == 1024
    assert image.size[0] / image.size[1] == pytest.approx(1500 / 600, rel=0.01)
    # Content-addressed: the key is the hash of the stored bytes.
    first_key = f"avatars/{member.id}/{hashlib.sha256(served.content).hexdigest()}.png"
    assert await avatar_row(backend_db, member.id) == (first_url, first_key)
    assert backend.stored_keys(member.id) == {first_key}
    me = await client.get("/users/me/", headers=member.headers)
    assert me.json()["avatar_url"] == first_url
    if backend.name == "local":
        # nginx workers run as an unprivileged user: world-readable files, traversable folders.
        path = backend.media_root / first_key
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
        assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o755

    # POST is accepted too; the previous object is deleted once the new one is in place.
    second = await upload(client, member, jpeg_with_gps(), method="POST", filename="me.jpg")
    assert second.status_code == 200, second.text
    second_url = second.json()["avatar_url"]
    assert second_url.endswith(".jpg")
    assert (await fetch(second_url)).status_code == 200
    assert (await fetch(first_url)).status_code == 404
    (stored_url, stored_key) = await avatar_row(backend_db, member.id)
    assert stored_url == second_url
    assert backend.stored_keys(member.id) == {stored_key}
    contract = await backend_db.fetchrow("SELECT * FROM users.public_profiles WHERE id = $1", member.id)
    assert contract["avatar_url"] == second_url

    # The same picture again maps to the same key: it must not be deleted as "the old one".
    again = await upload(client, member, jpeg_with_gps())
    assert again.json()["avatar_url"] == second_url
    assert (await fetch(second_url)).status_code == 200
    assert backend.stored_keys(member.id) == {stored_key}


async def test_metadata_is_removed_and_orientation_applied(backend, client) -> None:
    member = await new_member(client)
    # The file name and Content-Type lie; the bytes decide.
    response = await upload(client, member, jpeg_with_gps(), filename="x.gif", content_type="image/gif")
    assert response.status_code == 200, response.text
    served = (await fetch(response.json()["avatar_url"])).content
    for marker in (b"Exif", b"SecretCameraMaker", b"SecretModel"):
        assert marker not in served
    image = Image.open(io.BytesIO(served))
    assert image.format == "JPEG"
    assert not image.getexif()
    assert not image.getexif().get_ifd(0x8825)
    # 3000x2000 with "rotate 90°": shown upright as portrait, at most 1024 px a side.
    assert image.size == (683, 1024)


@pytest.mark.parametrize(
    ("fmt", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "png"), ("WEBP", "webp")]
)
async def test_each_accepted_type(backend, client, fmt: str, extension: str) -> None:
    member = await new_member(client)
    data = encode(Image.new("RGB", (80, 40), (1, 200, 3)), fmt)
    response = await upload(client, member, data, filename="a.bin", content_type="application/octet-stream")
    assert response.status_code == 200, response.text
    url = response.json()["avatar_url"]
    assert url.endswith("." + extension)
    served = await fetch(url)
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).size == (80, 40)


async def test_rejected_uploads_change_nothing(backend, client, backend_db) -> None:
    member = await new_member(client)
    accepted = await upload(client, member, png())
    assert accepted.status_code == 200
    before = await avatar_row(backend_db, member.id)
    stored_before = backend.stored_keys(member.id)

    bmp = encode(Image.new("RGB", (10, 10)), "BMP")
    cases: list[tuple[str, bytes, int]] = [
        # size first: over the service's 8 MiB (nginx lets 9 MiB through) even if not an image
        ("service size limit", b"\x89PNG\r\n\x1a\n" + b"\0" * (8 * MIB), 413),
        ("service size limit, not an image", b"x" * (8 * MIB + 1), 413),
        # then the type, from the bytes
        ("plain text named .png", b"definitely not a picture", 415),
        ("bmp named .png", bmp, 415),
        ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", 415),
        ("empty file", b"", 415),
        # then decodable and bounded
        ("truncated png", png((300, 300))[:60], 400),
        ("garbage after a jpeg signature", b"\xff\xd8\xff\xe0" + os.urandom(2000), 400),
        ("decompression bomb", png_claiming(60_000, 60_000), 400),
    ]
    for label, data, status in cases:
        response = await upload(client, member, data)
        assert response.status_code == status, (label, response.text)
        assert isinstance(response.json()["detail"], str), label

    # nginx's own limit on this location (AVATAR_MAX_BODY, 9m): a JSON 413 before the service.
    too_big = await upload(client, member, b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * MIB))
    assert too_big.status_code == 413
    assert too_big.json() == {"detail": "Request body is too large", "code": "request_too_large"}

    # Malformed requests.
    wrong_field = await upload(client, member, png(), field="file")
    assert wrong_field.status_code == 422
    not_multipart = await client.patch("/users/upload-avatar/", content=png(), headers=member.headers)
    assert not_multipart.status_code == 422

    # A form body that cannot be read is the 422 of a malformed body (Starlette's own 400 had a
    # code no client could know), with the reason.
    def form(body: bytes, content_type: str = "multipart/form-data; boundary=XX") -> dict[str, Any]:
        return {"content": body, "headers": {**member.headers, "Content-Type": content_type}}

    part = b'--XX\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n'
    unreadable = {
        "no boundary": form(b"--XX--\r\n", "multipart/form-data"),
        "too many parts": form(b"".join(part % i for i in range(1001)) + b"--XX--\r\n"),
        "a field part over 1 MiB": form(
            b'--XX\r\nContent-Disposition: form-data; name="avatar_file"\r\n\r\n'
            + b"\x89PNG" + b"\0" * (2 * MIB) + b"\r\n--XX--\r\n"
        ),
    }
    for label, request in unreadable.items():
        response = await client.patch("/users/upload-avatar/", **request)
        assert (response.status_code, response.json()["code"]) == (422, "validation_error"), label
        (problem,) = response.json()["detail"]
        assert (problem["type"], problem["loc"], bool(problem["ctx"]["error"])) == (
            "multipart_invalid",
            ["body"],
            True,
        ), label
    # An image sent as a plain field (no file name) is refused as one, and not quoted back whole.
    as_field = await client.patch(
        "/users/upload-avatar/",
        **form(
            b'--XX\r\nContent-Disposition: form-data; name="avatar_file"\r\n\r\n'
            + random_png((300, 300))
            + b"\r\n--XX--\r\n"
        ),
    )
    assert as_field.status_code == 422
    assert len(as_field.content) < 2000

    assert await avatar_row(backend_db, member.id) == before
    assert backend.stored_keys(member.id) == stored_before
    assert (await fetch(before[0])).status_code == 200


async def test_upload_needs_a_token(backend, client, backend_db) -> None:
    member = await new_member(client)
    anonymous = await client.patch("/users/upload-avatar/", files={"avatar_file": ("a.png", png())})
    assert anonymous.status_code == 401
    forged = await client.patch(
        "/users/upload-avatar/",
        files={"avatar_file": ("a.png", png())},
        headers={"X-User-Id": str(member.id)},
    )
    assert forged.status_code == 401
    assert await avatar_row(backend_db, member.id) == (None, None)
    assert backend.stored_keys(member.id) == set()


async def test_a_storage_failure_keeps_the_old_avatar(backend, client, backend_db) -> None:
    member = await new_member(client)
    picture_a, picture_b = random_png(), random_png()
    first = await upload(client, member, picture_a)
    url_a = first.json()["avatar_url"]
    key_a = f"avatars/{member.id}/{url_a.rsplit('/', 1)[1]}"
    current = await upload(client, member, picture_b)
    assert current.status_code == 200
    before = await avatar_row(backend_db, member.id)

    if backend.name == "local":
        # A folder where picture A's file must go: writing it fails.
        blocker = backend.media_root / key_a
        blocker.mkdir()
        try:
            failed = await upload(client, member, picture_a)
        finally:
            blocker.rmdir()
    else:
        assert backend.moto is not None
        backend.moto.stop()
        try:
            failed = await upload(client, member, picture_a)
        finally:
            backend.moto.start()

    assert failed.status_code == 503, failed.text
    assert "detail" in failed.json()
    assert await avatar_row(backend_db, member.id) == before
    assert backend.stored_keys(member.id) == {before[1]}
    assert (await fetch(before[0])).status_code == 200

    # And the next attempt, with storage back, works.
    retried = await upload(client, member, picture_a)
    assert retried.status_code == 200
    assert retried.json()["avatar_url"] == url_a
    assert backend.stored_keys(member.id) == {key_a}


async def test_concurrent_uploads_leave_exactly_the_current_object(backend, client, backend_db) -> None:
    member = await new_member(client)
    pictures = [random_png() for _ in range(4)] + [png()] * 2
    responses = await asyncio.gather(*(upload(client, member, picture) for picture in pictures))
    assert [r.status_code for r in responses] == [200] * len(pictures)
    url, key = await avatar_row(backend_db, member.id)
    assert url in {r.json()["avatar_url"] for r in responses}
    assert backend.stored_keys(member.id) == {key}
    assert (await fetch(url)).status_code == 200


async def test_upload_replaces_an_external_avatar(backend, client, backend_db) -> None:
    """A Yandex ID user starts with an external picture and no stored key; an upload replaces it
    and nothing is deleted for the external one."""
    member = await new_member(client)
    external = "https://avatars.yandex.net/get-yapic/31804/islands-200"
    await backend_db.execute("UPDATE users.users SET avatar_url = $1 WHERE id = $2", external, member.id)
    assert (await client.get("/users/me/", headers=member.headers)).json()["avatar_url"] == external

    response = await upload(client, member, png())
    assert response.status_code == 200, response.text
    url, key = await avatar_row(backend_db, member.id)
    assert url == response.json()["avatar_url"] != external
    assert backend.stored_keys(member.id) == {key}
