"""claw-ai lab backend: the smallest FastAPI service that behaves like the real one for deployment tests.

    GET /        {"service": "claw-ai-backend", "version": ..., "commit": ...}   version: env APP_VERSION, else
                 the VERSION file; commit: env APP_COMMIT (the Dockerfile sets it from the GIT_COMMIT build arg)
    GET /health  200 {"status": "ok", "service": ..., "version": ..., "commit": ..., "postgres": "ok",
                 "redis": "ok"}, or 503 with "error" for the failing side(s) and the reason under "detail"
    WS  /ws      echoes every text or binary message

Connection settings (read on every check, so a restart is not needed to see a change):
    DATABASE_URL (postgresql://USER:PASSWORD@HOST:PORT/DB; a driver suffix such as +asyncpg is ignored), or
    POSTGRES_HOST (default "postgres"), POSTGRES_PORT (5432), POSTGRES_USER (postgres), POSTGRES_PASSWORD,
    POSTGRES_DB (= POSTGRES_USER)
    REDIS_URL (redis://[:PASSWORD@]HOST:PORT/DB), or REDIS_HOST (default "redis"), REDIS_PORT (6379),
    REDIS_PASSWORD
    HEALTH_TIMEOUT: seconds allowed for the checks (default 3; they run in parallel, and a name lookup that
    hangs counts too, so /health answers within about that time)
"""

import os
import re
import threading
import time
from pathlib import Path

import psycopg2
import redis
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

SERVICE = "claw-ai-backend"
VERSION_FILE = Path(__file__).resolve().parent / "VERSION"


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


def timeout() -> float:
    try:
        return max(0.5, float(os.environ.get("HEALTH_TIMEOUT", "3")))
    except ValueError:
        return 3.0


def check_postgres() -> None:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        # SQLAlchemy-style URLs (postgresql+asyncpg://...) name a driver libpq does not know.
        kwargs = {"dsn": re.sub(r"^postgres(ql)?\+[a-z0-9_]+://", "postgresql://", url)}
    else:
        user = os.environ.get("POSTGRES_USER", "postgres")
        kwargs = {
            "host": os.environ.get("POSTGRES_HOST", "postgres"),
            "port": int(os.environ.get("POSTGRES_PORT", "5432")),
            "user": user,
            "password": os.environ.get("POSTGRES_PASSWORD", ""),
            "dbname": os.environ.get("POSTGRES_DB", user),
        }
    conn = psycopg2.connect(connect_timeout=max(1, round(timeout())), application_name=SERVICE, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        conn.close()


def check_redis() -> None:
    url = os.environ.get("REDIS_URL", "").strip()
    t = timeout()
    if url:
        client = redis.Redis.from_url(url, socket_connect_timeout=t, socket_timeout=t)
    else:
        client = redis.Redis(
            host=os.environ.get("REDIS_HOST", "redis"),
            port=int(os.environ.get("REDIS_PORT", "6379")),
            password=os.environ.get("REDIS_PASSWORD") or None,
            socket_connect_timeout=t,
            socket_timeout=t,
        )
    try:
        if not client.ping():
            raise RuntimeError("PING did not return PONG")
    finally:
        client.close()


app = FastAPI(title=SERVICE, version=app_version())


@app.get("/")
def root():
    return {"service": SERVICE, "version": app_version(), "commit": app_commit()}


def run_checks(checks, limit: float) -> dict:
    """Run each check in its own thread; return {name: None or an error message}, within about `limit` s.
    A check still running then (say, a DNS lookup of a stopped container's name) is left to finish alone."""
    results = {}

    def run(name, check):
        try:
            check()
            results[name] = None
        except Exception as e:  # noqa: BLE001 - any failure makes the service unhealthy
            results[name] = f"{type(e).__name__}: {str(e).strip() or 'failed'}"

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in checks]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, f"TimeoutError: no answer within {limit:g} s") for name, _ in checks}


@app.get("/health")
def health():
    # A plain `def`: FastAPI runs it in a worker thread, so waiting here does not stall the event loop.
    errors = run_checks((("postgres", check_postgres), ("redis", check_redis)), timeout())
    body = {"status": "ok", "service": SERVICE, "version": app_version(), "commit": app_commit()}
    for name, error in errors.items():
        body[name] = "ok" if error is None else "error"
    detail = {name: error for name, error in errors.items() if error is not None}
    if detail:
        body["status"] = "error"
        body["detail"] = detail
        return JSONResponse(body, status_code=503)
    return body


@app.websocket("/ws")
async def ws_echo(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("text") is not None:
                await ws.send_text(msg["text"])
            elif msg.get("bytes") is not None:
                await ws.send_bytes(msg["bytes"])
    except WebSocketDisconnect:
        pass
