#!/bin/sh
# A service container's entry point (see Dockerfile): its migrations, when it owns a schema, then
# uvicorn on port 8000. SERVICE is the service's folder, set by the image.
set -eu
if [ -f "/app/$SERVICE/alembic.ini" ]; then
  alembic -c "/app/$SERVICE/alembic.ini" upgrade head
fi
case "$SERVICE" in
  # Websocket services: frames are small; the event gateway sends JSON without per-message
  # deflate (its CPU cost per session outweighs the bytes saved on small frames).
  qr_ws_service) extra="--ws-max-size 65536" ;;
  # One worker: an instance's sessions live in its process (scale with instances). SIGTERM sends
  # op 7 RECONNECT to every session before uvicorn stops.
  events_service) extra="--ws-max-size 65536 --ws-per-message-deflate false" ;;
  *) extra="" ;;
esac
# shellcheck disable=SC2086 # $extra is a list of options
# httptools, one write per answer and a stop that does not race the balancer (common/serving.py).
exec uvicorn "$SERVICE.main:create_app" --factory --host 0.0.0.0 --port 8000 \
  --loop uvloop --http common.serving:HttpProtocol --no-access-log $extra
