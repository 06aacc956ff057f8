#!/bin/sh
# docker-compose: the database roles, made once when the postgres container creates its cluster
# (docker-entrypoint-initdb.d). The same roles devstack makes for `make run`
# (devstack/src/devstack/roles.py): each service logs in as its own role, which owns its schema
# and runs its migrations there; a view a service publishes is granted by its migration to a
# contract role (NOLOGIN), and the services that may read it are members of that role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" \
  -v users_pw="$USERS_DB_PASSWORD" -v auth_pw="$AUTH_DB_PASSWORD" -v chat_pw="$CHAT_DB_PASSWORD" \
  -v gateway_pw="$GATEWAY_DB_PASSWORD" -v events_pw="$EVENTS_DB_PASSWORD" <<'SQL'
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;

CREATE ROLE users_public_reader NOLOGIN;
CREATE ROLE auth_tokens_reader NOLOGIN;
CREATE ROLE private_chat_members_reader NOLOGIN;

CREATE ROLE chat_users LOGIN PASSWORD :'users_pw';
CREATE ROLE chat_auth LOGIN PASSWORD :'auth_pw';
CREATE ROLE chat_private_chat LOGIN PASSWORD :'chat_pw';
CREATE ROLE chat_gateway LOGIN PASSWORD :'gateway_pw';
CREATE ROLE chat_events LOGIN PASSWORD :'events_pw';
GRANT CONNECT ON DATABASE :"db" TO chat_users, chat_auth, chat_private_chat, chat_gateway, chat_events;

GRANT users_public_reader TO chat_auth, chat_private_chat, chat_events;
GRANT auth_tokens_reader TO chat_gateway, chat_events;
GRANT private_chat_members_reader TO chat_events;

CREATE SCHEMA users AUTHORIZATION chat_users;
CREATE SCHEMA auth AUTHORIZATION chat_auth;
CREATE SCHEMA private_chat AUTHORIZATION chat_private_chat;
SQL
