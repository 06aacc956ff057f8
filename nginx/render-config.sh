#!/bin/sh
# Renders the project's nginx template for docker-compose (devstack renders it for make run).
# Upstreams are the compose service names (a service with replicas resolves to every container);
# media is proxied to the MinIO bucket.
set -eu
template=/etc/nginx/chat-template

# The operator's settings: what the environment sets (not empty), else nginx/defaults.env's.
while IFS='=' read -r key value; do
  case "$key" in '' | '#'*) continue ;; esac
  eval "current=\${$key:-}"
  [ -n "$current" ] || eval "$key=\$value"
done < "$template/defaults.env"
prefix=/etc/nginx/chat
mkdir -p "$prefix/tmp" "$prefix/locations"
cp "$template/proxy_public.conf" "$template/proxy_protected.conf" "$template/security_headers.conf" "$prefix/"

# upstream NAME "host:port ..." BALANCING websocket|http
upstream() {
  [ -n "$2" ] || return 0
  echo "    upstream $1 {"
  [ -z "$3" ] || echo "        $3"
  # A hashed upstream (QR hubs) never takes an instance out after one failure: that would split
  # a hub whose two clients connect on either side of it (see devstack/nginx.py, passive_check).
  if [ -n "$3" ]; then check="max_fails=0"; else check="max_fails=1 fail_timeout=2s"; fi
  for server in $2; do echo "        server $server $check;"; done
  if [ "$4" = http ]; then
    echo "        keepalive 64;"
    echo "        keepalive_timeout 4s;"
  fi
  echo "    }"
}
{
  upstream gateway "${GATEWAY_UPSTREAMS:-gateway:8000}" "" http
  upstream auth_service "${AUTH_UPSTREAMS:-auth:8000}" "" http
  upstream users_service "${USERS_UPSTREAMS:-users:8000}" "" http
  upstream private_chat_service "${PRIVATE_CHAT_UPSTREAMS:-private_chat:8000}" "" http
  upstream qr_ws_service "${QR_WS_UPSTREAMS:-qr_ws:8000}" 'hash $arg_client_id consistent;' websocket
  upstream events_service "${EVENTS_UPSTREAMS:-}" "" websocket
} > "$prefix/upstreams.conf"

# A service's own locations only when its upstream exists (EVENTS_UPSTREAMS for events.conf).
rm -f "$prefix"/locations/*.conf
for file in "$template"/locations/*.conf; do
  [ -e "$file" ] || continue
  name=$(basename "$file" .conf | tr 'a-z' 'A-Z')
  eval "servers=\${${name}_UPSTREAMS:-}"
  [ -n "$servers" ] || continue
  sed -e "s|{{PREFIX}}|$prefix|g" "$file" > "$prefix/locations/$(basename "$file")"
done

sed \
  -e "s|{{USER_DIRECTIVE}}|user nginx;|" \
  -e "s|{{NGINX_WORKER_PROCESSES}}|${NGINX_WORKER_PROCESSES}|" \
  -e "s|{{PREFIX}}|$prefix|g" \
  -e "s|{{TEMP}}|$prefix/tmp|g" \
  -e "s|{{ERROR_LOG}}|/dev/stderr|" \
  -e "s|{{ACCESS_LOG}}|/dev/stdout|" \
  -e "s|{{NGINX_ACCESS_LOG}}|${NGINX_ACCESS_LOG}|" \
  -e "s|{{NGINX_AUTH_CACHE_SECONDS}}|${NGINX_AUTH_CACHE_SECONDS}|" \
  -e "s|{{EDGE_SECRET}}|${EDGE_SECRET:?set EDGE_SECRET (what nginx sends every service)}|" \
  -e "s|{{HTTP_HOST}}|0.0.0.0|" \
  -e "s|{{HTTP_PORT}}|8080|" \
  -e "s|{{LOGIN_RATE_LIMIT}}|${LOGIN_RATE_LIMIT}|" \
  -e "s|{{LOGIN_RATE_BURST}}|${LOGIN_RATE_BURST}|g" \
  -e "s|{{REGISTER_RATE_LIMIT}}|${REGISTER_RATE_LIMIT}|" \
  -e "s|{{REGISTER_RATE_BURST}}|${REGISTER_RATE_BURST}|g" \
  -e "s|{{AVATAR_MAX_BODY}}|${AVATAR_MAX_BODY}|" \
  -e "s|{{WEB_ROOT}}|/usr/share/chat-web|" \
  -e "s|{{MEDIA_SOURCE}}|proxy_pass ${MEDIA_UPSTREAM:-http://minio:9000/avatars/};|" \
  -e "/{{UPSTREAMS}}/{r $prefix/upstreams.conf" -e "d;}" \
  -e "s|{{INTERNAL_SERVERS}}||" \
  -e "s|{{STATUS_LISTEN}}|8081|" \
  "$template/nginx.conf.template" > /etc/nginx/nginx.conf

if grep -q '{{' /etc/nginx/nginx.conf; then
  echo "render-config: unfilled placeholders:" >&2
  grep -o '{{[A-Z_]*}}' /etc/nginx/nginx.conf >&2
  exit 1
fi
