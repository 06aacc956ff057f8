#!/bin/sh
# Renders the project's nginx template for docker-compose (devstack renders it for make run).
# Upstreams are the compose service names; media is proxied to the MinIO bucket.
set -eu
template=/etc/nginx/chat-template
prefix=/etc/nginx/chat
mkdir -p "$prefix/tmp"
cp "$template/proxy_public.conf" "$template/proxy_protected.conf" "$prefix/"

server_lines() {  # "host:port host:port" -> one "server ...;" line each, escaped for sed
  for upstream in $1; do printf '        server %s max_fails=0;\\n' "$upstream"; done
}

sed \
  -e "s|{{USER_DIRECTIVE}}|user nginx;|" \
  -e "s|{{NGINX_WORKER_PROCESSES}}|${NGINX_WORKER_PROCESSES:-auto}|" \
  -e "s|{{PREFIX}}|$prefix|g" \
  -e "s|{{ERROR_LOG}}|/dev/stderr|" \
  -e "s|{{ACCESS_LOG}}|/dev/stdout|" \
  -e "s|{{NGINX_ACCESS_LOG}}|${NGINX_ACCESS_LOG:-1}|" \
  -e "s|{{NGINX_AUTH_CACHE_SECONDS}}|${NGINX_AUTH_CACHE_SECONDS:-0}|" \
  -e "s|{{HTTP_HOST}}|0.0.0.0|" \
  -e "s|{{HTTP_PORT}}|8080|" \
  -e "s|{{LOGIN_RATE_LIMIT}}|${LOGIN_RATE_LIMIT:-10r/s}|" \
  -e "s|{{LOGIN_RATE_BURST}}|${LOGIN_RATE_BURST:-30}|g" \
  -e "s|{{REGISTER_RATE_LIMIT}}|${REGISTER_RATE_LIMIT:-5r/s}|" \
  -e "s|{{REGISTER_RATE_BURST}}|${REGISTER_RATE_BURST:-30}|g" \
  -e "s|{{AVATAR_MAX_BODY}}|${AVATAR_MAX_BODY:-9m}|" \
  -e "s|{{GATEWAY_SERVERS}}|$(server_lines "${GATEWAY_UPSTREAMS:-gateway:8000}")|" \
  -e "s|{{AUTH_SERVERS}}|$(server_lines "${AUTH_UPSTREAMS:-auth:8000}")|" \
  -e "s|{{USERS_SERVERS}}|$(server_lines "${USERS_UPSTREAMS:-users:8000}")|" \
  -e "s|{{PRIVATE_CHAT_SERVERS}}|$(server_lines "${PRIVATE_CHAT_UPSTREAMS:-private_chat:8000}")|" \
  -e "s|{{QR_WS_SERVERS}}|$(server_lines "${QR_WS_UPSTREAMS:-qr_ws_1:8000 qr_ws_2:8000}")|" \
  -e "s|{{WEB_ROOT}}|/usr/share/chat-web|" \
  -e "s|{{MEDIA_SOURCE}}|proxy_pass ${MEDIA_UPSTREAM:-http://minio:9000/avatars/};|" \
  "$template/nginx.conf.template" > /etc/nginx/nginx.conf

if grep -q '{{' /etc/nginx/nginx.conf; then
  echo "render-config: unfilled placeholders:" >&2
  grep -o '{{[A-Z_]*}}' /etc/nginx/nginx.conf >&2
  exit 1
fi
