from sqlalchemy import MetaData

SCHEMA = "private_chat"
metadata = MetaData(schema=SCHEMA)
