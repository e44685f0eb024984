"""claw-ai lab backend: settings from the environment, shared by app.py (the server) and migrate.py.

The variables are listed in app.py's docstring."""

import os
import re
from pathlib import Path

SERVICE = "claw-ai-backend"
HERE = Path(__file__).resolve().parent
VERSION_FILE = HERE / "VERSION"
MIGRATIONS_DIR = HERE / "migrations"


def app_version() -> str:
    env = os.environ.get("APP_VERSION", "").strip()
    if env:
        return env
    try:
        return VERSION_FILE.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def app_commit() -> str:
    return os.environ.get("APP_COMMIT", "").strip() or "unknown"


def env_float(name: str, default: float, minimum: float) -> float:
    try:
        return max(minimum, float(os.environ.get(name, str(default))))
    except ValueError:
        return default


def env_int(name: str, default: int, minimum: int) -> int:
    try:
        return max(minimum, int(os.environ.get(name, str(default))))
    except ValueError:
        return default


def timeout() -> float:
    return env_float("HEALTH_TIMEOUT", 3.0, 0.5)


def postgres_kwargs() -> dict:
    """psycopg2.connect keyword arguments: DATABASE_URL, else the POSTGRES_* variables."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        # SQLAlchemy-style URLs (postgresql+asyncpg://...) name a driver libpq does not know.
        return {"dsn": re.sub(r"^postgres(ql)?\+[a-z0-9_]+://", "postgresql://", url)}
    user = os.environ.get("POSTGRES_USER", "postgres")
    return {
        "host": os.environ.get("POSTGRES_HOST", "postgres"),
        "port": int(os.environ.get("POSTGRES_PORT", "5432")),
        "user": user,
        "password": os.environ.get("POSTGRES_PASSWORD", ""),
        "dbname": os.environ.get("POSTGRES_DB", user),
    }


def redis_kwargs() -> dict:
    """redis.Redis keyword arguments (without timeouts): REDIS_URL, else the REDIS_* variables.
    A "url" key means redis.Redis.from_url(url, **the rest)."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        return {"url": url}
    return {
        "host": os.environ.get("REDIS_HOST", "redis"),
        "port": int(os.environ.get("REDIS_PORT", "6379")),
        "password": os.environ.get("REDIS_PASSWORD") or None,
    }


def secret_key() -> bytes:
    """SECRET_KEY as bytes; empty when unset (then no token is issued or accepted)."""
    return os.environ.get("SECRET_KEY", "").encode()
