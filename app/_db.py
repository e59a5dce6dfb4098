"""The database: engine, write transactions, change counters, files at rest, migrations.

SQLite runs in WAL mode with a busy timeout. Reads begin a plain deferred transaction;
writes (:func:`write_transaction`) begin with ``BEGIN IMMEDIATE`` so concurrent writers
queue on the busy timeout instead of failing with "database is locked" when a read
transaction tries to upgrade. Every store that serving processes cache (keys, upstreams,
admins) bumps a change counter in the same write transaction, so those processes learn
of changes by polling one row.

The data directory is 0700 and the SQLite files 0600, whatever the umask: they hold
key hashes, encrypted credentials and everyone's usage.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Column, MetaData, event, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool
from sqlmodel import Field, SQLModel

from app.settings import Settings, SettingsError, redact_url

__all__ = [
    "HEAD_REVISION",
    "WRITE_OPTION",
    "CounterRow",
    "DatabaseMissing",
    "MetaRow",
    "bump_counter",
    "create_engine",
    "ensure_data_dir",
    "metadata",
    "off_loop",
    "read_counter",
    "read_meta",
    "require_database",
    "upgrade",
    "write_meta",
    "write_transaction",
]

T = TypeVar("T")

HEAD_REVISION = "0004"
"""The newest migration; a test keeps it equal to alembic's head."""

WRITE_OPTION = "poolgate_write"
"""Execution option that makes the SQLite engine begin with ``BEGIN IMMEDIATE``."""

BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT = 5.0  # seconds to connect, or to wait for a pooled connection
PG_COMMAND_TIMEOUT = 60.0  # seconds one statement of a serving process may take
DIR_MODE = 0o700
FILE_MODE = 0o600


class CounterRow(SQLModel, table=True):
    """Monotonic change counters (``keys``, ``upstreams``, ``admins``): one row to poll per store."""

    __tablename__ = "counters"

    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_column=Column(BigInteger, nullable=False, default=0))


class MetaRow(SQLModel, table=True):
    """Small named values shared by every process, such as the page-token signing secret."""

    __tablename__ = "meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=512)


COUNTERS = CounterRow.__table__  # type: ignore[attr-defined]
META = MetaRow.__table__  # type: ignore[attr-defined]


def metadata() -> MetaData:
    """Every table, registered by importing the modules that define them (for alembic and tests)."""
    import keys._table  # noqa: F401

    return SQLModel.metadata


class DatabaseMissing(SettingsError):
    """A command that only reads or changes an existing database found none (or an old one)."""


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction; on SQLite it begins with ``BEGIN IMMEDIATE`` (see ``WRITE_OPTION``)."""
    async with engine.connect() as plain:
        conn = await plain.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            yield conn


async def bump_counter(conn: AsyncConnection, name: str) -> int:
    """Increment a change counter inside the caller's transaction and return its new value."""
    result = await conn.execute(
        update(COUNTERS).where(COUNTERS.c.name == name).values(value=COUNTERS.c.value + 1).returning(COUNTERS.c.value)
    )
    value = result.scalar_one_or_none()
    if value is None:
        raise DatabaseMissing("the database is not initialised: run `poolgate db upgrade`")
    return int(value)


async def read_counter(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        value = (await conn.execute(select(COUNTERS.c.value).where(COUNTERS.c.name == name))).scalar()
    return int(value or 0)


async def read_meta(engine: AsyncEngine, name: str) -> str | None:
    async with engine.connect() as conn:
        value = (await conn.execute(select(META.c.value).where(META.c.name == name))).scalar()
    return None if value is None else str(value)


async def write_meta(conn: AsyncConnection, name: str, value: str) -> None:
    """Set a meta value inside the caller's write transaction."""
    changed = await conn.execute(update(META).where(META.c.name == name).values(value=value))
    if not changed.rowcount:
        await conn.execute(META.insert().values(name=name, value=value))


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """The engine for ``settings.database_url``; statement parameters never reach error messages."""
    pooling: dict[str, Any] = {"poolclass": NullPool} if not pooled else {}
    if not settings.is_sqlite:
        # A PostgreSQL that stops answering must fail calls in seconds, not hang them: asyncpg waits
        # 60 s to connect by default and forever for a reply.
        connect_args: dict[str, Any] = {"timeout": PG_CONNECT_TIMEOUT}
        if pooled:
            kept = (settings.database_pool_size + 1) // 2
            pooling = {"pool_pre_ping": True, "pool_size": kept, "max_overflow": settings.database_pool_size - kept,
                       "pool_timeout": PG_CONNECT_TIMEOUT}
            connect_args["command_timeout"] = PG_COMMAND_TIMEOUT
        return create_async_engine(settings.database_url, hide_parameters=True, connect_args=connect_args, **pooling)
    if pooled:
        pooling = {"poolclass": AsyncAdaptedQueuePool, "pool_size": 5, "max_overflow": 5}
    path = sqlite_path(settings)
    if path is not None and path.parent.is_dir():
        private_file(path)
    engine = create_async_engine(
        settings.database_url,
        hide_parameters=True,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
        **pooling,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file of ``settings`` (None for PostgreSQL or an in-memory database)."""
    if not settings.is_sqlite:
        return None
    location = settings.database_url.split(":///", 1)[1].split("?", 1)[0]
    return None if location in ("", ":memory:") else Path(location)


def private_file(path: Path) -> None:
    """Create ``path`` (and tighten its WAL companions) readable by this user only.

    SQLite creates ``-wal`` and ``-shm`` with the mode of the main file, so a main file made
    0600 keeps the others private too; files made by an older version are tightened here.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError:
        return  # not ours to create (read-only mount, say): SQLite reports it in its own words
    os.close(fd)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            if name.stat().st_mode & 0o077:
                name.chmod(FILE_MODE)
        except OSError:
            continue


def ensure_data_dir(settings: Settings) -> Path:
    """Create the data directory (0700) and prove it is writable, or fail with one clear line."""
    path = settings.data_dir
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(path.stat().st_mode & DIR_MODE | DIR_MODE)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"POOLGATE_DATA_DIR: cannot write to {path}: {exc.strerror or exc}") from None
    return path


def describe(settings: Settings) -> str:
    """The database as people should see it: the SQLite path, or the URL without its password."""
    path = sqlite_path(settings)
    return str(path.resolve()) if path is not None else redact_url(settings.database_url)


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at; None when it has never been migrated."""
    async with engine.connect() as conn:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception:
            return None


def require_database(settings: Settings) -> None:
    """Refuse, in one line naming it, to work on a database that does not exist or is not migrated.

    Only ``serve``, ``demo`` and ``db upgrade`` create or migrate a database; any other command run
    from the wrong directory (or with the wrong settings) must not quietly start a new one.
    """
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        raise SettingsError(f"POOLGATE_DATA_DIR: cannot write to {settings.data_dir}: it is a file, not a directory")
    path = sqlite_path(settings)
    if path is not None and not path.exists():
        raise DatabaseMissing(
            f"no poolgate database at {path.resolve()}: run this where the server runs, set POOLGATE_DATA_DIR or "
            "POOLGATE_DATABASE_URL to its database, or create it with `poolgate db upgrade`"
        )
    revision = off_loop(lambda: asyncio.run(_revision(settings)))
    if revision is None:
        raise DatabaseMissing(f"the database at {describe(settings)} has no poolgate schema: run `poolgate db upgrade`")
    if revision != HEAD_REVISION:
        raise DatabaseMissing(
            f"the database at {describe(settings)} is at schema {revision}, this poolgate needs {HEAD_REVISION}: "
            "run `poolgate db upgrade`"
        )


async def _revision(settings: Settings) -> str | None:
    engine = create_engine(settings, pooled=False)
    try:
        return await schema_revision(engine)
    finally:
        await engine.dispose()


def migrations_dir() -> Path:
    """``alembic/`` beside the packages in a checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "alembic", here / "_alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("migrations are missing from this installation")


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (creating it); safe to call on every start."""
    _alembic("upgrade", settings, revision)


def downgrade(settings: Settings, revision: str) -> None:
    _alembic("downgrade", settings, revision)


def alembic_config(settings: Settings) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def _alembic(action: str, settings: Settings, revision: str) -> None:
    from alembic import command

    path = sqlite_path(settings)
    if path is not None:
        _ensure_parent(settings, path)
        private_file(path)
    config = alembic_config(settings)
    run = getattr(command, action)
    off_loop(lambda: run(config, revision))


def off_loop(call: Callable[[], T]) -> T:
    """``call()`` from sync code; on a thread of its own when this thread runs an event loop (alembic's
    async env, and ``asyncio.run``, run a loop of their own, which cannot share a running one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(call())
        except BaseException as exc:  # handed back to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="poolgate-db")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _ensure_parent(settings: Settings, path: Path) -> None:
    if path.parent == settings.data_dir:
        ensure_data_dir(settings)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"POOLGATE_DATABASE_URL: cannot create {path.parent}: {exc.strerror}") from None
