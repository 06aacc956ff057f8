from common.migrations import run_service_migrations
from private_chat_service.models import SCHEMA, metadata

run_service_migrations(schema=SCHEMA, metadata=metadata)
