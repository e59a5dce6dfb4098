"""Database engine, SQLite pragmas, data directory and migrations.

SQLite runs in WAL mode with a busy timeout. Reads begin a plain deferred transaction;
writes (marked with the ``poolgate_write`` execution option) begin with
``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing
with "database is locked" when a read transaction tries to upgrade.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool
from sqlmodel import Field, SQLModel, select

import app.pool._table
import app.usage._table  # noqa: F401  (registers the usage tables on SQLModel.metadata)
import keys  # noqa: F401  (registers the key tables on SQLModel.metadata)
from app.settings import Settings, SettingsError
from keys import WRITE_OPTION

__all__ = ["MetaRow", "create_engine", "ensure_data_dir", "metadata", "migrations_dir", "read_meta", "upgrade"]

metadata = SQLModel.metadata
BUSY_TIMEOUT_MS = 10_000


class MetaRow(SQLModel, table=True):
    """Small named values shared by every process, such as the page-token signing secret."""

    __tablename__ = "meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=512)


async def read_meta(engine: AsyncEngine, name: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(MetaRow.value).where(MetaRow.name == name))).scalar()


PG_CONNECT_TIMEOUT = 5.0  # seconds to connect, or to wait for a pooled connection
PG_COMMAND_TIMEOUT = 60.0  # seconds one statement of a serving process may take


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


def ensure_data_dir(settings: Settings) -> Path:
    """Create the data directory and prove it is writable, or fail with one clear line."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"POOLGATE_DATA_DIR: cannot write to {path}: {exc.strerror or exc}"
        ) from None
    return path


def migrations_dir() -> Path:
    """``alembic/`` beside the packages in a checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "alembic", here / "_alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("migrations are missing from this installation")


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database to ``revision``; safe to call on every start."""
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

    if settings.is_sqlite:
        _ensure_parent(settings)
    config = alembic_config(settings)
    run = getattr(command, action)
    if not _loop_running():
        run(config, revision)
        return
    # Alembic's async env runs its own event loop, so it cannot share a running one.
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(config, revision)
        except BaseException as exc:  # handed back to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="poolgate-migrate")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _ensure_parent(settings: Settings) -> None:
    path = Path(settings.database_url.split(":///", 1)[1])
    if path.parent == settings.data_dir:
        ensure_data_dir(settings)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"POOLGATE_DATABASE_URL: cannot create {path.parent}: {exc.strerror}") from None
