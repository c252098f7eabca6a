# SQLite settings for a Django app whose database db-sync keeps durable (Django 5.1 or later).
# Paste into settings.py, or `from .settings_sqlite import DATABASES`.
import os

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # The same path db-sync restores to and snapshots from.
        "NAME": os.environ.get("DB_LOCAL_PATH", "/data/db.sqlite3"),
        "OPTIONS": {
            # WAL: readers (db-sync's snapshot among them) never block writers, and writers never
            # block readers. NORMAL is durable in WAL mode except for the last commits on power loss.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # Take the write lock at BEGIN, so a busy database waits `timeout` instead of failing a
            # transaction halfway with "database is locked".
            "transaction_mode": "IMMEDIATE",
            # Busy timeout in seconds: how long a connection waits for a lock.
            "timeout": 20,
        },
    }
}
