"""claw-ai lab backend: a small FastAPI service that behaves like the real one for deployment tests.

    GET  /              {"service": "claw-ai-backend", "version": ..., "commit": ...}   version: env APP_VERSION,
                        else the VERSION file; commit: env APP_COMMIT (the Dockerfile sets it from GIT_COMMIT)
    GET  /health        200 {"status": "ok", "service": ..., "version": ..., "commit": ..., "postgres": "ok",
                        "redis": "ok"}, or 503 with "error" for the failing side(s) and the reason under "detail"
    WS   /ws            echoes every text or binary message
    POST /items         JSON {"key": str (chosen by the client, unique), "body": str} -> 201 {"id", "key",
                        "body", "version"}; a key that exists -> 409
    GET  /items/{key}   200 {"id", "key", "body", "version"} or 404
    POST /token         JSON {"user": str} -> {"token", "expires", "version"}: HMAC-SHA256 over the user and an
                        expiry (TOKEN_TTL s), keyed by SECRET_KEY, so any instance with the same key accepts it
    GET  /whoami        header `Authorization: Bearer TOKEN` -> 200 {"user", "version"}, or 401
    POST /counters/{n}  Redis INCR of counter:{n} -> {"name", "value", "version"}

"version" in an answer is the release that answered it. Every error of these endpoints is JSON {"detail",
"version"}: 503 when PostgreSQL or Redis cannot be reached, when SECRET_KEY is unset or empty (/token, /whoami:
no token is issued or accepted), or when the database schema is not migrated ("database schema not migrated:
run `python3 migrate.py`"). The server never changes the schema: `python3 migrate.py` (a one-off command, see
its docstring) applies migrations/NNNN_name.sql.

Shutdown (SIGTERM, as `docker stop` sends it): uvicorn stops accepting connections, closes idle keep-alive
connections, lets requests in flight finish (a slow upload included) and closes their connections after the
answer (no `Connection: close` header is added), and closes every open WebSocket with a close frame, code 1012
(service restart), without waiting for the client's close frame: uvicorn 0.32's `websockets` implementation
does all this itself, before the lifespan shutdown (which then closes the PostgreSQL and Redis pools).
Requests still running after --timeout-graceful-shutdown seconds (the Dockerfile's CMD: 20) are cancelled;
give the container longer than that to stop (compose `stop_grace_period`, `docker stop -t`), or it is killed
first. A proxy holding an idle keep-alive connection to this server can still send a request on it as it is
closed: take the server out of the proxy's rotation before stopping it.

Connection settings (/health reads them on every check, so a restart is not needed to see a change; the API's
connection pools read them once, at first use):
    DATABASE_URL (postgresql://USER:PASSWORD@HOST:PORT/DB; a driver suffix such as +asyncpg is ignored), or
    POSTGRES_HOST (default "postgres"), POSTGRES_PORT (5432), POSTGRES_USER (postgres), POSTGRES_PASSWORD,
    POSTGRES_DB (= POSTGRES_USER)
    REDIS_URL (redis://[:PASSWORD@]HOST:PORT/DB), or REDIS_HOST (default "redis"), REDIS_PORT (6379),
    REDIS_PASSWORD
    HEALTH_TIMEOUT: seconds allowed for the checks (default 3; they run in parallel, and a name lookup that
    hangs counts too, so /health answers within about that time)
    SECRET_KEY: the key of the tokens (the same on every instance); TOKEN_TTL: their lifetime in s (3600)
    DB_POOL_MAX: PostgreSQL connections per process (10); DB_TIMEOUT: seconds to wait for one (5)
"""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from contextlib import asynccontextmanager

import psycopg2
import psycopg2.errors
import psycopg2.pool
import redis
from fastapi import FastAPI, Header, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from settings import (
    SERVICE,
    app_commit,
    app_version,
    env_float,
    env_int,
    postgres_kwargs,
    redis_kwargs,
    secret_key,
    timeout,
)


def check_postgres() -> None:
    conn = psycopg2.connect(connect_timeout=max(1, round(timeout())), application_name=SERVICE,
                            **postgres_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        conn.close()


def redis_client(t: float, **extra) -> redis.Redis:
    kwargs = redis_kwargs()
    url = kwargs.pop("url", None)
    kwargs.update(socket_connect_timeout=t, socket_timeout=t, **extra)
    return redis.Redis.from_url(url, **kwargs) if url else redis.Redis(**kwargs)


def check_redis() -> None:
    client = redis_client(timeout())
    try:
        if not client.ping():
            raise RuntimeError("PING did not return PONG")
    finally:
        client.close()


class Unavailable(Exception):
    """A dependency is missing or down: the endpoint answers 503 with this detail."""


class Db:
    """A PostgreSQL connection pool created at first use: at most DB_POOL_MAX connections, a caller waiting up
    to DB_TIMEOUT s for one (psycopg2's pool itself fails at once when exhausted)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool = None
        self.slots = None

    def get_pool(self):
        with self.lock:
            if self.pool is None:
                size = env_int("DB_POOL_MAX", 10, 1)
                self.slots = threading.BoundedSemaphore(size)
                self.pool = psycopg2.pool.ThreadedConnectionPool(
                    0, size, connect_timeout=max(1, round(timeout())), application_name=SERVICE,
                    **postgres_kwargs(),
                )
                # Opened on demand (minconn 0: nothing is opened now), then kept: psycopg2 closes a returned
                # connection when minconn connections are idle already.
                self.pool.minconn = size
            return self.pool

    def run(self, work):
        """work(cursor) in a transaction, committed after it returns. A broken connection (say, PostgreSQL
        restarted since it was opened) is dropped, and the work tried once more on a fresh one if the failure
        came before the commit (then nothing was written); a failed commit is not retried (its outcome is
        unknown)."""
        pool = self.get_pool()
        if not self.slots.acquire(timeout=env_float("DB_TIMEOUT", 5.0, 0.1)):
            raise Unavailable("PostgreSQL: no free connection in time")
        try:
            for attempt in (1, 2):
                try:
                    conn = pool.getconn()
                except psycopg2.Error as e:
                    raise Unavailable(f"PostgreSQL: {type(e).__name__}: {str(e).strip()}") from e
                done = broken = committing = False
                try:
                    with conn.cursor() as cur:
                        result = work(cur)
                    committing = True
                    conn.commit()
                    done = True
                    return result
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
                    broken = True
                    if attempt == 1 and not committing:
                        continue
                    raise Unavailable(f"PostgreSQL: {type(e).__name__}: {str(e).strip()}") from e
                except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn) as e:
                    raise Unavailable("database schema not migrated: run `python3 migrate.py`") from e
                finally:
                    if not done and not broken:
                        try:
                            conn.rollback()
                        except psycopg2.Error:
                            broken = True
                    pool.putconn(conn, close=broken or bool(conn.closed))
        finally:
            self.slots.release()

    def close(self):
        with self.lock:
            if self.pool is not None:
                self.pool.closeall()
                self.pool = None


DB = Db()


class Cache:
    """One Redis client (its own thread-safe connection pool), created at first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.client = None

    def get(self) -> redis.Redis:
        with self.lock:
            if self.client is None:
                self.client = redis_client(timeout(), health_check_interval=30)
            return self.client

    def close(self):
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


REDIS = Cache()


@asynccontextmanager
async def lifespan(_app):
    yield
    # After uvicorn has drained the connections (see the docstring): nothing uses the pools any more.
    DB.close()
    REDIS.close()


app = FastAPI(title=SERVICE, version=app_version(), lifespan=lifespan)


def answer(status: int, detail) -> JSONResponse:
    return JSONResponse({"detail": detail, "version": app_version()}, status_code=status)


@app.exception_handler(Unavailable)
async def unavailable(_request, exc: Unavailable):
    return answer(503, str(exc))


@app.exception_handler(RequestValidationError)
async def invalid(_request, exc: RequestValidationError):
    return answer(422, json.loads(json.dumps(exc.errors(), default=str)))


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


# ---------------------------------------------------------------------------------------------------- items
# The item fields this release reads and writes besides id and key: the columns it names, so a schema that
# has more (a later release's migration) does not disturb it.
ITEM_FIELDS = ("body",)


class ItemIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    body: str


def item_answer(row) -> dict:
    item = dict(zip(("id", "key", *ITEM_FIELDS), row))
    item["version"] = app_version()
    return item


@app.post("/items", status_code=201)
def create_item(item: ItemIn):
    # Plain `def` endpoints run in FastAPI's thread pool: psycopg2 blocks.
    values = item.model_dump()
    columns = ("key", *ITEM_FIELDS)
    sql = "INSERT INTO items ({0}) VALUES ({1}) ON CONFLICT (key) DO NOTHING RETURNING id, {0}".format(
        ", ".join(columns), ", ".join(["%s"] * len(columns))
    )

    def work(cur):
        cur.execute(sql, [values[c] for c in columns])
        return cur.fetchone()

    row = DB.run(work)
    if row is None:
        return answer(409, f"item {item.key!r} exists")
    return item_answer(row)


@app.get("/items/{key}")
def get_item(key: str):
    sql = "SELECT id, key, {} FROM items WHERE key = %s".format(", ".join(ITEM_FIELDS))

    def work(cur):
        cur.execute(sql, (key,))
        return cur.fetchone()

    row = DB.run(work)
    if row is None:
        return answer(404, f"no item {key!r}")
    return item_answer(row)


# ---------------------------------------------------------------------------------------------------- tokens
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key() -> bytes:
    key = secret_key()
    if not key:
        raise Unavailable("SECRET_KEY is not set: no token is issued or accepted")
    return key


def sign(payload: bytes, key: bytes) -> str:
    return b64(hmac.new(key, b"claw-ai token v1\n" + payload, hashlib.sha256).digest())


def verify(token: str, key: bytes):
    """The user a valid, unexpired token names, else None."""
    try:
        payload_b64, mac = token.split(".")
        if not hmac.compare_digest(sign(payload_b64.encode(), key), mac):
            return None
        claims = json.loads(unb64(payload_b64))
        if not isinstance(claims.get("user"), str) or float(claims["exp"]) < time.time():
            return None
        return claims["user"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class TokenIn(BaseModel):
    user: str = Field(min_length=1, max_length=200)


@app.post("/token")
def issue_token(req: TokenIn):
    key = signing_key()
    expires = int(time.time()) + env_int("TOKEN_TTL", 3600, 1)
    payload = b64(json.dumps({"user": req.user, "exp": expires}, separators=(",", ":")).encode())
    return {"token": f"{payload}.{sign(payload.encode(), key)}", "expires": expires, "version": app_version()}


@app.get("/whoami")
def whoami(authorization: str = Header(default="")):
    key = signing_key()
    scheme, _, token = authorization.partition(" ")
    user = verify(token.strip(), key) if scheme.lower() == "bearer" else None
    if user is None:
        response = answer(401, "a valid bearer token is required (POST /token)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return {"user": user, "version": app_version()}


# ---------------------------------------------------------------------------------------------------- counters
@app.post("/counters/{name}")
def count(name: str):
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
        return answer(422, "a counter name is 1 to 100 of A-Z a-z 0-9 _ . -")
    try:
        value = REDIS.get().incr(f"counter:{name}")
    except redis.RedisError as e:
        raise Unavailable(f"Redis: {type(e).__name__}: {str(e).strip()}") from e
    return {"name": name, "value": value, "version": app_version()}


# ---------------------------------------------------------------------------------------------------- ws
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
