# One image definition for every Python service; the service is a build argument:
#   docker build --build-arg SERVICE=private_chat_service -t chat-private-chat .
# (SERVICE is the service's folder: gateway, auth_service, users_service, private_chat_service,
# qr_ws_service, events_service.) docker-compose.yml builds each service from here.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the locked dependencies and the service's packages, installed into /venv -----------
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/venv
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=<service folder>" >&2; exit 1; }
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY . .
# The workspace package is the folder's name with dashes (private_chat_service -> private-chat-service).
RUN uv sync --frozen --no-dev --no-editable --package "$(echo "$SERVICE" | tr _ -)"

# ---- runtime: no build tools, no sources but the migrations, a non-root user -------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ENV SERVICE=${SERVICE} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/venv/bin:$PATH
COPY --from=build /venv /venv
WORKDIR /app
# Alembic's configuration and migration scripts (services that own a schema), the key generator
# the compose `keys` job runs, and the entry point.
COPY --from=build /src/${SERVICE} /app/${SERVICE}
COPY scripts/keygen.py scripts/serve.sh /app/scripts/
RUN rm -rf /app/${SERVICE}/src /app/${SERVICE}/tests
# nobody: the image runs as a non-root user, and compose runs it with a read-only root filesystem.
USER nobody
EXPOSE 8000
# Compose starts what depends on a service once it is ready (its database and Redis answer).
HEALTHCHECK --interval=5s --timeout=3s --retries=20 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"]
CMD ["/app/scripts/serve.sh"]
