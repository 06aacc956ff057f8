from auth_service.models import SCHEMA, metadata
from common.migrations import run_service_migrations

run_service_migrations(schema=SCHEMA, metadata=metadata)
