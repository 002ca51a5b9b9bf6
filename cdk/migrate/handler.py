"""Run on every deploy (a CDK trigger): apply the catalogue's pending migrations.

The functions also migrate when they first open the database (shazzam.db.Database); this makes a
deploy fail loudly if the schema cannot be applied, instead of the first event after it.
"""

from shazzam import app as app_module
from shazzam.db import migrate


def lambda_handler(event, context):
    database = app_module.database_from_environment(migrate=False)
    try:
        return {"applied": migrate(database.engine)}
    finally:
        database.close()
