#!/usr/bin/env python3
"""lazyboss: a job server for small hosts that delegates work to faceless workers.

Clients submit jobs over HTTP, workers claim them by long polling and report
progress, results and errors; lazyboss remembers what went to whom and when,
and steps in when a worker goes silent. One SQLite file holds everything (or,
for several replicas, one PostgreSQL database).

The module reads top to bottom, each section using only those above it:

- Settings and small parsers: `Config`, durations, times, compact JSON.
- Errors: `LazybossError` and its kinds, each carrying an HTTP status and code.
- Schema and SQL: the migrations (SQLite's, and PostgreSQL's schema) and the
  SQL that builds a job's JSON (also as it was at one of its events) and picks
  the next job, in each engine's words (`_SQLiteSQL`, `_PostgresSQL`).
- Validation and SSE encoding: what a submission, a type's settings and a
  progress stream may hold; JSON Schemas (the optional `schema` extra); how
  events go on the wire.
- Schedules: intervals and cron lines, and when they next fire.
- Store: the engines (`_SQLiteEngine`, `_PostgresEngine`: what only one of them
  does), every read and every transaction; the feed that reads new events once
  for every stream.
- Reaper and systemd: the housekeeping thread, sd_notify, socket activation.
- Metrics: Prometheus' text format and the request histogram.
- Status page: `GET /` for browsers, one page whose style sheet and script are
  the constants `_PAGE_STYLE` and `_PAGE_SCRIPT`, and the rendering of its tables.
- HTTP API: the handlers, authentication (tokens, and the page's session
  cookies with their CSRF checks), streams, the route table `_ROUTES` with
  each route's OpenAPI description (GET /openapi.json), and `make_app`.
- Serving: waitress on a port, the orderly stop, `serve`.
- Client: the HTTP API from Python: `Client`, the back-off every caller uses.
- Worker engine: claiming, leases, progress and reports for any runner; the
  runner of `lazyboss work` that runs a command per job, and `Worker`, whose
  runner calls a Python function per job.
- Command line: `main` and its sub-commands.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import codecs
import contextvars
import errno
import fcntl
import functools
import hashlib
import hmac
import http.client
import importlib
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import resource
import secrets
import selectors
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import sys
import termios
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from types import MethodType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only the worker, the client and cron schedules with a time zone need these: each is imported
    # where it is used, so a server that never runs them never loads them (a smaller idle server).
    import queue
    import subprocess

import bottle
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer, UnixWSGIServer
from waitress.task import ErrorTask, WSGITask

__all__ = [
    "__version__",
    "JOB_STATUSES",
    "FINISHED_STATUSES",
    "ROLES",
    "Config",
    "parse_duration",
    "parse_time",
    "rfc3339",
    "LazybossError",
    "NotFound",
    "Forbidden",
    "Conflict",
    "Invalid",
    "Unauthorized",
    "StorageError",
    "StorageFull",
    "Unreachable",
    "Cancelled",
    "JobSpec",
    "ProgressItem",
    "parse_job_spec",
    "parse_progress",
    "Cron",
    "Every",
    "parse_every",
    "Store",
    "SystemdNotifier",
    "Reaper",
    "make_app",
    "Server",
    "serve",
    "Client",
    "Job",
    "Worker",
    "main",
]

# --------------------------------------------------------------------------
# Settings and small parsers
# --------------------------------------------------------------------------

__version__ = "0.1.0"
_log = logging.getLogger("lazyboss")

JOB_STATUSES = ("held", "pending", "processing", "done", "failed", "cancelled")
FINISHED_STATUSES = ("done", "failed", "cancelled")

_DEFAULT_MAX_ATTEMPTS = 3
_DEFAULT_TIMEOUT = 300.0
_DEFAULT_PRIORITY = 0
_DEFAULT_BACKOFF_BASE = 1.0  # first retry after ~2 s, then ~4 s, ~8 s, ...
_DEFAULT_BACKOFF_MAX = 600.0

# How often a waiting worker looks at the file even without a wake-up from
# this process: another lazyboss process on the same file cannot wake it.
_FOREIGN_WRITE_POLL = 1.0

_PURGE_BATCH = 500  # jobs a purge deletes per transaction

_WAL_SIZE_LIMIT = 8 << 20
# Free space a full disk must have again (and any disk at start) before /health says writes work:
# the largest request of the default --max-body.
_ROOM_TO_HEAL = 1 << 20

# Bytes of jobs or events a listing or a stream reads and sends at a time (one
# large job may go over it alone): what a client asks for is never held whole.
_WRITE_BUDGET = 1 << 20

_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")  # always fullmatch: `$` lets a newline in


@dataclass
class Config:
    """Server settings; every field is a `--flag` and a `LAZYBOSS_*` variable."""

    db: str = "lazyboss.sqlite"
    host: str = "127.0.0.1"
    port: int | None = 8080  # None: no TCP, only the UNIX socket
    unix_socket: str = ""
    unix_socket_mode: str = "660"
    threads: int = 32
    max_wait: float = 60.0
    max_body: int = 1 << 20
    sync: str = "full"
    retain: str = "7d"
    reap_interval: float = 1.0
    heartbeat: float = 15.0
    max_connections: int = 500
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    umask: str = "077"
    session_ttl: str = "12h"
    log_level: str = "info"


def _is_loopback(host: str) -> bool:
    """Whether a bind address (or a Host header's name) means this machine only: `localhost`, or an
    address in 127.0.0.0/8 or ::1. A name such as 127.example.com is not: its DNS may say anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ASCII digits and spaces only, spelt out so that the OpenAPI document's regular expressions mean the same.
_DURATION_FORM = r"[ \t\n\r\f\v]*([0-9]+(?:\.[0-9]+)?)[ \t\n\r\f\v]*(ms|s|m|h|d|w)?[ \t\n\r\f\v]*"
_DURATION = re.compile(_DURATION_FORM)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_LONGEST_DURATION = 100 * 366 * 86400.0


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DATABASE_URLS = "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH, a plain path, or postgresql://USER@HOST/NAME"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_POSTGRES_EXTRA = "lazyboss[postgres]"


def _is_postgres_url(text: str) -> bool:
    """Whether a database address is a PostgreSQL server's URL (postgresql://…, postgres://…)."""
    scheme = _URL_SCHEME.match(text)
    return scheme is not None and scheme.group(1).lower() in _POSTGRES_SCHEMES and text[scheme.end() :][:2] == "//"


# Database servers' schemes (and SQLAlchemy's `dialect+driver` forms of them), refused even with their
# `//` forgotten (`postgresql:me:secret@db/jobs`): that is no file name, and repeating it would show the password.
_SERVER_SCHEMES = {"postgres", "postgresql", "mysql", "mariadb", "oracle", "mssql", "cockroachdb", "redis"}


def _is_password_parameter(piece: str) -> bool:
    """Whether one `name=value` of a URL's query is a password, as libpq reads it (the name decoded)."""
    return urllib.parse.unquote(piece).partition("=")[0].strip().lower() == "password"


def _refuse_server_url(text: str, origin: str) -> None:
    """Refuse a URL naming a database server lazyboss cannot use (another than PostgreSQL, or PostgreSQL
    without psycopg installed), which no file path looks like; the ValueError names its scheme, never the
    URL, which may hold a password."""
    scheme = _URL_SCHEME.match(text)
    if scheme is None or scheme.group(1).lower() == "sqlite":
        return
    if not text[scheme.end() :].startswith("//") and scheme.group(1).lower().split("+")[0] not in _SERVER_SCHEMES:
        return
    if _is_postgres_url(text):
        try:  # a bracket left open, a port that is no number: ValueError (each host of libpq's `h1:p1,h2:p2`)
            for host in urllib.parse.urlsplit(text).netloc.rpartition("@")[2].split(","):
                _ = urllib.parse.urlsplit(f"//{host}").port
        except ValueError:
            raise ValueError(
                f"{origin} names a PostgreSQL database by a URL whose host or port cannot be read; "
                "write it as postgresql://USER:PASSWORD@HOST:PORT/NAME"
            ) from None
        try:
            import psycopg  # noqa: F401 - only whether it is there
        except ImportError:
            raise ValueError(
                f"{origin} names a PostgreSQL database, which needs psycopg: pip install '{_POSTGRES_EXTRA}'"
            ) from None
        return
    raise ValueError(f"{origin} names a {scheme.group(1)}: database; lazyboss takes {_DATABASE_URLS}")


def _database_path(url: str) -> str:
    """The SQLite file that a DATABASE_URL names: `sqlite:///abs/path` (or `sqlite:////abs/path`),
    `sqlite:relative/path`, or a plain path. ValueError says what is supported; it never repeats the
    URL, which may hold a password."""
    _refuse_server_url(url, "DATABASE_URL")
    if _is_postgres_url(url):
        return url
    scheme = _URL_SCHEME.match(url)
    if scheme is None or (scheme.group(1).lower() != "sqlite" and not url[scheme.end() :].startswith("//")):
        return url  # a plain path (a colon in a file name too)
    parts = urllib.parse.urlsplit(url)
    if parts.netloc or "?" in url or "#" in url:
        raise ValueError(f"DATABASE_URL names a host or options, which SQLite has none of; use {_DATABASE_URLS}")
    path = os.fsdecode(urllib.parse.unquote_to_bytes(parts.path))  # %FF is that byte, as the file system has it
    if "\0" in path:
        raise ValueError("DATABASE_URL's path holds a NUL byte (%00), which no file name may")
    if path.startswith("//"):  # sqlite:////abs/path, as SQLAlchemy writes an absolute path
        path = "/" + path.lstrip("/")
    if not path.strip("/") or path == ":memory:":
        raise ValueError(f"DATABASE_URL names no database file; use {_DATABASE_URLS}")
    return path


def parse_duration(text: str) -> float:
    """Seconds in a duration like `90`, `30s`, `10m`, `2h` or `7d`, at most a century."""
    match = _DURATION.fullmatch(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 10m, 2h, 7d)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > _LONGEST_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years")
    return seconds


# Threads kept for short requests: streams and long polls may hold all the others.
_RESERVED_THREADS = 4

# What each setting may be; anything else is refused at start (exit status 2).
_SETTING_RANGES: dict[str, tuple[float, float]] = {
    "port": (0, 65535),  # 0: any free port
    "threads": (_RESERVED_THREADS + 1, 1024),  # at least one thread for a stream or a long poll
    "max_wait": (0, 86400),
    "max_body": (1024, 1 << 30),
    "reap_interval": (0.01, 3600),
    "heartbeat": (0.01, 3600),
    "max_connections": (10, 1 << 20),
    "header_timeout": (0.1, 3600),
    "idle_timeout": (0.1, 86400),
}
_UNIX_PATH_MAX = 107  # bytes of a UNIX socket's path, its terminating zero aside
_SETTING_CHOICES = {"sync": ("full", "normal"), "log_level": ("debug", "info", "warning", "error")}


def _parse_setting(name: str, text: str) -> Any:
    """A `Config` field from the text of its flag or variable; ValueError says what is wrong."""
    text = text.strip()
    kind = {item.name: str(item.type) for item in fields(Config)}[name]
    if name in _SETTING_RANGES:
        low, high = _SETTING_RANGES[name]
        whole = kind.startswith("int")
        number = re.fullmatch(r"[0-9]+" if whole else r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text)
        value = (int if whole else float)(text) if number else None
        if value is None or not low <= value <= high:
            what = "a whole number" if whole else "a number"
            raise ValueError(f"{text!r} is not {what} from {low:,g} to {high:,}")
        return value
    if name in _SETTING_CHOICES and text not in _SETTING_CHOICES[name]:
        raise ValueError(f"{text!r} is not one of {', '.join(_SETTING_CHOICES[name])}")
    if name == "db" and not text:
        raise ValueError("no database file named")
    if name == "retain":
        parse_duration(text)
    if name == "session_ttl" and parse_duration(text) <= 0:
        raise ValueError(f"{text!r} is no time at all")
    if name == "unix_socket_mode" and not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError(f"{text!r} is not an octal file mode such as 660 or 600")
    if name == "unix_socket_mode" and not int(text, 8) & stat.S_IWUSR:
        raise ValueError(f"{text!r} lets not even the socket's owner connect (that needs write permission: 660, 600)")
    if name == "unix_socket" and len(os.fsencode(text)) > _UNIX_PATH_MAX:
        raise ValueError(f"a UNIX socket's path is at most {_UNIX_PATH_MAX} bytes (Linux's limit)")
    if name == "umask" and not re.fullmatch(r"0?[0-7]{1,3}", text):
        raise ValueError(f"{text!r} is not an octal file mode mask such as 077 or 027")
    return text


# 1970-01-01 as a julian day's milliseconds: SQLite's strftime counts time so.
_JULIAN_UNIX_MS = 210866760000000


def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as RFC 3339 UTC with milliseconds, or None.

    Rounded to the millisecond as SQLite's strftime rounds, in its steps
    (doubles, through the milliseconds of a julian day): not always to the
    nearest, but an event's `at` is then its job's `updated_at` to the
    millisecond, as the database renders it.
    """
    if timestamp is None:
        return None
    milliseconds = int(timestamp * 1000 + _JULIAN_UNIX_MS + 0.5) - _JULIAN_UNIX_MS
    moment = datetime.fromtimestamp(milliseconds // 1000, timezone.utc).replace(microsecond=milliseconds % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# 9999-12-31T23:59:59.999Z: the last millisecond RFC 3339 can write, as lazyboss writes times (SQLite's
# strftime too, which rounds to the millisecond and writes nothing at all for a time past this one).
_LATEST_TIME = 253402300799.999


def parse_time(value: Any) -> float:
    """A Unix time from an RFC 3339 string (with a zone) or a number of seconds, from 1970 to 9999."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        timestamp = value
    elif isinstance(value, str):
        try:
            # Before Python 3.11 fromisoformat does not take a Z for UTC.
            moment = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
        if moment.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; add Z for UTC")
        timestamp = moment.timestamp()
    else:
        raise ValueError("must be an RFC 3339 time such as 2026-01-31T12:00:00Z")
    if not 0 <= timestamp <= _LATEST_TIME:  # also refuses NaN
        raise ValueError(f"{value!r} is not from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z")
    return float(timestamp)


def _backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before the next attempt: base·2^failures, ±25 % jitter, at most cap."""
    delay = base * 2 ** min(failures, 62)
    return min(cap, delay * random.uniform(0.75, 1.25))


# NaN and Infinity are not JSON: refused when encoding, as the server refuses them when reading.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(value: Any) -> str:
    """Compact JSON for a column."""
    return _COMPACT_JSON.encode(value)


def _with_members(document: str, members: dict[str, str]) -> str:
    """A JSON object's text (as SQLite's json_object writes it: no space before its closing brace) with
    more members at its end, their values JSON texts, without parsing it."""
    return document[:-1] + "".join(f",{_encode(name)}:{value}" for name, value in members.items()) + "}"


def _id_ranges(ids: list[int]) -> str:
    """Ids for a log line, runs written as ranges: `3-7,9,12-13`."""
    runs: list[list[int]] = []
    for number in sorted(ids):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class LazybossError(Exception):
    """A refusal with an HTTP status, an error code and a human detail.

    The server raises the subclasses to answer a request; the client raises
    the same classes for the server's refusals, so callers catch one kind.
    """

    status: int | None = 400
    code = "bad_request"

    def __init__(self, detail: str, code: str | None = None, status: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(LazybossError):
    status, code = 404, "not_found"


class Forbidden(LazybossError):
    status, code = 403, "forbidden"


class Conflict(LazybossError):
    status, code = 409, "conflict"


class Invalid(LazybossError):
    status, code = 422, "invalid"


class Unauthorized(LazybossError):
    status, code = 401, "unauthorized"


class StorageError(LazybossError):
    """The database file cannot do what was asked (read-only, failing, damaged, gone): nothing was changed."""

    status, code = 503, "storage_error"


class StorageFull(StorageError):
    status, code = 507, "storage_full"


# SQLite's result codes that blame the file rather than the request: the kind, code and detail to answer.
_FULL = (StorageFull, "storage_full", "the disk holding the database is full: nothing was written")
_SQLITE_FAILURES = {
    13: _FULL,
    4874: _FULL,  # SQLITE_IOERR_SHMSIZE: no room for the shared memory file
    8: (StorageError, "read_only", "the database file or its file system is read-only: nothing was written"),
    10: (StorageError, "io_error", "the disk failed to read or write the database (I/O error): nothing was written"),
    11: (StorageError, "database_corrupt", "the database file is damaged (SQLite: database disk image is malformed)"),
    26: (StorageError, "not_a_database", "the database file is not an SQLite database"),
    14: (StorageError, "cannot_open", "the database file cannot be opened"),
    5: (StorageError, "database_busy", "another process held the database's write lock too long: nothing was written"),
}
# The same codes told by SQLite's messages, for Python before 3.11, which does not pass the code on.
_SQLITE_MESSAGES = {
    "database or disk is full": 13,
    "attempt to write a readonly database": 8,
    "disk I/O error": 10,
    "database disk image is malformed": 11,
    "file is not a database": 26,
    "unable to open database file": 14,
    "database is locked": 5,
}


def _storage_error(error: sqlite3.Error) -> StorageError | None:
    """What an SQLite error says about the file, as the StorageError to answer; None when it is lazyboss's own."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        code = _SQLITE_MESSAGES.get(str(error))
    elif code not in _SQLITE_FAILURES:
        code &= 0xFF  # the primary code of an extended one
    if code not in _SQLITE_FAILURES:
        return None
    kind, name, detail = _SQLITE_FAILURES[code]
    return kind(detail, name)


class Unreachable(LazybossError):
    """The client got no answer from lazyboss: connection refused or lost, a timeout, TLS failed, or an
    answer lazyboss never gives (a redirect, a web page, JSON that is not lazyboss's: another server or a
    proxy answered in its place)."""

    status, code = None, "unreachable"


class Cancelled(BaseException):
    """Raised in a task function (by `job.progress`, `job.log`, `job.event`) when its work should stop.

    A BaseException, as asyncio's CancelledError: an `except Exception` in
    the function does not swallow it by mistake.
    """


# --------------------------------------------------------------------------
# Schema and SQL
# --------------------------------------------------------------------------


def _separate_submission_keys(db: sqlite3.Connection) -> None:
    """Migration 4: a client's Idempotency-Key names a submission; schedule ticks get a column of their own.

    Until now one unique column held the keys of clients, of batch members
    (KEY/0, KEY/1, ...) and of schedule ticks (schedule:NAME:TICK), so that
    one could stand for another. Batch members are recognised by KEY/0 and
    KEY/1 both being there (a batch had at least two jobs); where a client
    used KEY for a single job too, the submission made first keeps KEY.

    A key shaped as a tick's (schedule:NAME:TICK) may have been a tick's or a
    client's: it becomes both. The schedule takes the job as that tick's (see
    `Store._run_schedule`), and the same key sent again returns it, as it did.
    """
    db.execute("ALTER TABLE jobs RENAME COLUMN idempotency_key TO schedule_tick")
    db.execute(
        """CREATE TABLE submissions (
               id INTEGER PRIMARY KEY,
               key TEXT NOT NULL UNIQUE,  -- the client's Idempotency-Key
               batch INTEGER NOT NULL,  -- 1: the jobs came as a list
               jobs INTEGER NOT NULL  -- how many
           )"""
    )
    db.execute("ALTER TABLE jobs ADD COLUMN submission INTEGER REFERENCES submissions (id)")
    db.execute("CREATE INDEX jobs_submission ON jobs (submission) WHERE submission IS NOT NULL")
    keyed = dict(db.execute("SELECT schedule_tick, id FROM jobs WHERE schedule_tick IS NOT NULL ORDER BY id"))
    db.execute("UPDATE jobs SET schedule_tick = NULL")
    submissions: dict[str, tuple[bool, list[int]]] = {}
    for key, job_id in sorted(keyed.items(), key=lambda item: item[1]):
        tick = re.fullmatch(r"schedule:([^:]+:[0-9.]+)", key)
        if tick:
            db.execute("UPDATE jobs SET schedule_tick = ? WHERE id = ?", (tick.group(1), job_id))
        member = re.fullmatch(r"(.*)/[0-9]+", key, re.DOTALL)
        batch = member is not None and f"{member.group(1)}/0" in keyed and f"{member.group(1)}/1" in keyed
        name = member.group(1) if member and batch else key
        first = submissions.setdefault(name, (batch, []))
        if first[0] == batch:
            first[1].append(job_id)
    for key, (batch, ids) in submissions.items():
        submission = db.execute(
            "INSERT INTO submissions (key, batch, jobs) VALUES (?, ?, ?)", (key, batch, len(ids))
        ).lastrowid
        db.executemany("UPDATE jobs SET submission = ? WHERE id = ?", [(submission, job_id) for job_id in ids])


def _json_member(document: str, key: str) -> str:
    """SQL for the JSON text of a member of a JSON column ('null' when it is absent)."""
    path = f"'$.{key}'"
    # json_extract gives SQL values (1 for true); json_quote turns the rest back into JSON text.
    return f"""CASE json_type({document}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
        ELSE json_quote(json_extract({document}, {path})) END"""


def _allow_held_jobs(db: sqlite3.Connection) -> None:
    """Migration 9: `held` is a job status (submitted with `"hold": true`, never claimed until released).

    SQLite changes a CHECK constraint only by copying the table, and copying `jobs`
    would cascade deletes into `attempts` and drop the counting triggers. A wider
    constraint changes nothing on disk (every row valid before stays valid), so the
    table's definition is edited in place, as SQLite's documentation allows for
    removing a constraint (https://www.sqlite.org/lang_altertable.html#otheralter).
    """
    (definition,) = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
    widened, found = re.subn(
        r"CHECK \(status IN\s*\((?:'held', )?'pending',", "CHECK (status IN ('held', 'pending',", definition
    )
    if found != 1:
        raise StorageError("its table of jobs is not one lazyboss made (no status CHECK to widen)", "schema_unknown")
    (version,) = db.execute("PRAGMA schema_version").fetchone()
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'jobs'", (widened,))
    db.execute(f"PRAGMA schema_version = {version + 1}")  # every connection reads the schema again
    db.execute("PRAGMA writable_schema = OFF")


# A trigger's body that reserves a pending job with claims, from its `run_at`, for its claim window
# (no end without one), and lists its claims' values in `job_claims`.
_RESERVE = """
    UPDATE jobs SET reserved_until = NEW.run_at + COALESCE(NEW.claim_window, 9e999) WHERE id = NEW.id;
    DELETE FROM job_claims WHERE job_id = NEW.id;
    INSERT INTO job_claims (job_id, key, value, priority, run_at)
        SELECT NEW.id, claim.key, COALESCE(choice.value, claim.value), NEW.priority, NEW.run_at
        FROM json_each(NEW.claims) AS claim
        LEFT JOIN json_each(CASE claim.type WHEN 'array' THEN claim.value END) AS choice;"""

# Migration 14 on both engines: no query reads jobs_type_queue since claims read the open queue's indexes
# (migration 10), yet every insert and every claim of a job kept it up to date.
_DROP_TYPE_QUEUE = "DROP INDEX jobs_type_queue;"

# Migration 15 on both engines: where each host's wall clock stood against its monotonic clock (by boot: the
# monotonic clock every process of one boot reads), so that when the wall clock jumps (NTP setting the clock
# of a Raspberry Pi that booted without one) running work keeps its leases: see `keep_leases_through_clock_jumps`.
_HOST_CLOCKS = """CREATE TABLE host_clocks (
    boot TEXT PRIMARY KEY,
    wall_offset DOUBLE PRECISION NOT NULL,
    noted_at DOUBLE PRECISION NOT NULL
);"""

# Migration 16 on both engines: an event whose result or error is its attempt's refers to the attempt
# (`outcome_of`, the stored value '') instead of holding a third copy of it: see `_SQLiteSQL.stored`.
_EVENT_OUTCOMES = "ALTER TABLE events ADD COLUMN outcome_of INTEGER;"

# Each migration is SQL statements, or a function of the connection for what SQL alone cannot say well.
_MIGRATIONS: list = [
    # 1: jobs, their attempts, the event log and per-type settings.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'processing', 'done', 'failed', 'cancelled')),
        parameters TEXT NOT NULL,
        result TEXT,
        error TEXT,
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        budget_start INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        timeout REAL NOT NULL,
        backoff_base REAL NOT NULL,
        backoff_max REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        assignee TEXT,
        attempt INTEGER,
        lease_expires_at REAL,
        progress REAL,
        idempotency_key TEXT UNIQUE
    );
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, run_at, id) WHERE status = 'pending';
    CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'processing';
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX jobs_type_queue ON jobs (type, priority DESC, run_at, id) WHERE status = 'pending';
    CREATE INDEX jobs_status ON jobs (status, id);

    CREATE TABLE attempts (
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        worker TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('processing', 'done', 'failed', 'expired', 'cancelled')),
        started_at REAL NOT NULL,
        finished_at REAL,
        result TEXT,
        error TEXT,
        PRIMARY KEY (job_id, id)
    ) WITHOUT ROWID;

    -- No foreign key: events outlive nothing, they are pruned with their jobs.
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL,
        type TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        job TEXT NOT NULL
    );
    CREATE INDEX events_job ON events (job_id, id);

    CREATE TABLE types (
        name TEXT PRIMARY KEY,
        timeout REAL,
        max_attempts INTEGER,
        backoff_base REAL,
        backoff_max REAL,
        paused INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    """,
    # 2: progress reported by workers (log chunks, percentages), kept once per id.
    """
    CREATE TABLE progress (
        job_id INTEGER NOT NULL,
        attempt_id INTEGER NOT NULL,
        id INTEGER NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (job_id, attempt_id, id),
        FOREIGN KEY (job_id, attempt_id) REFERENCES attempts (job_id, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    ALTER TABLE events ADD COLUMN detail TEXT;
    """,
    # 3: credentials, workers' last contact, per-type retention, recurring schedules.
    """
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('admin', 'worker', 'client')),
        hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        last_seen_at REAL NOT NULL
    );
    ALTER TABLE types ADD COLUMN retain REAL;
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        parameters TEXT NOT NULL,
        every TEXT NOT NULL,
        timezone TEXT NOT NULL,
        next_run_at REAL NOT NULL,
        last_run_at REAL,
        last_job_id INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    _separate_submission_keys,
    # 5: browser sessions of the status page; each belongs to a token and goes with it.
    """
    CREATE TABLE sessions (
        hash TEXT PRIMARY KEY,
        token TEXT NOT NULL REFERENCES tokens (name) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX sessions_token ON sessions (token);
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    """,
    # 6: jobs counted by type and status as they change, so a count costs the same however big the queue.
    # The triggers see every insert, status change and delete (not a REPLACE's delete: none is used).
    """
    CREATE TABLE job_counts (
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        number INTEGER NOT NULL,
        PRIMARY KEY (type, status)
    ) WITHOUT ROWID;
    INSERT INTO job_counts (type, status, number) SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status;
    CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts (type, status, number) VALUES (NEW.type, NEW.status, 1)
            ON CONFLICT (type, status) DO UPDATE SET number = number + 1;
    END;
    CREATE TRIGGER jobs_counted_on AFTER UPDATE OF status ON jobs WHEN OLD.status != NEW.status BEGIN
        UPDATE job_counts SET number = number - 1 WHERE type = OLD.type AND status = OLD.status;
        INSERT INTO job_counts (type, status, number) VALUES (NEW.type, NEW.status, 1)
            ON CONFLICT (type, status) DO UPDATE SET number = number + 1;
    END;
    CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET number = number - 1 WHERE type = OLD.type AND status = OLD.status;
    END;
    """,
    # 7: an event no longer copies the job's parameters, result and error. Parameters never
    # change (they are read from the job); an event keeps a result or error only when it
    # differs from the one its job's previous event had (see _EVENT_JOB_JSON).
    f"""
    ALTER TABLE events ADD COLUMN result TEXT;
    ALTER TABLE events ADD COLUMN error TEXT;
    UPDATE events SET result = history.result, error = history.error FROM (
        SELECT id, NULLIF(result, lag(result, 1, 'null') OVER job_order) AS result,
            NULLIF(error, lag(error, 1, 'null') OVER job_order) AS error
        FROM (SELECT id, job_id, {_json_member("job", "result")} AS result,
            {_json_member("job", "error")} AS error FROM events)
        WINDOW job_order AS (PARTITION BY job_id ORDER BY id)
    ) AS history WHERE events.id = history.id;
    UPDATE events SET job = json_set(job, '$.parameters', NULL, '$.result', NULL, '$.error', NULL);
    CREATE INDEX events_results ON events (job_id, id) WHERE result IS NOT NULL;
    CREATE INDEX events_errors ON events (job_id, id) WHERE error IS NOT NULL;
    """,
    # 8: queue policy: JSON Schemas and labels per type, and every change of a type's settings as a version.
    """
    ALTER TABLE types ADD COLUMN parameters_schema TEXT;
    ALTER TABLE types ADD COLUMN result_schema TEXT;
    ALTER TABLE types ADD COLUMN labels TEXT;
    CREATE TABLE type_versions (
        type TEXT NOT NULL,
        version INTEGER NOT NULL,
        settings TEXT,  -- the type's own settings after the change (as GET /types shows them); NULL: deleted
        changed TEXT NOT NULL,  -- the names of the settings that changed, a JSON list
        changed_by TEXT NOT NULL,
        changed_at REAL NOT NULL,
        PRIMARY KEY (type, version)
    ) WITHOUT ROWID;
    """,
    _allow_held_jobs,
    # 10: claim windows: a job with claims is reserved, for a while, for workers whose labels match them.
    f"""
    ALTER TABLE types ADD COLUMN claim_window REAL;
    ALTER TABLE jobs ADD COLUMN claims TEXT;
    ALTER TABLE jobs ADD COLUMN claim_window REAL;
    -- While a job with claims is pending: until when only workers matching them may take it (NULL: anyone
    -- may). The reaper empties it once passed, so that the job moves to the open queue's indexes.
    ALTER TABLE jobs ADD COLUMN reserved_until REAL;
    -- One row per allowed value of each claim of a reserved job, in the queue's order: a worker finds the
    -- jobs reserved for its labels through `job_claims_queue` without reading any other.
    CREATE TABLE job_claims (
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        PRIMARY KEY (job_id, key, value)
    ) WITHOUT ROWID;
    CREATE INDEX job_claims_queue ON job_claims (key, value, priority DESC, run_at, job_id);
    CREATE INDEX jobs_open_queue ON jobs (status, priority DESC, run_at, id)
        WHERE status = 'pending' AND reserved_until IS NULL;
    CREATE INDEX jobs_type_open_queue ON jobs (type, priority DESC, run_at, id)
        WHERE status = 'pending' AND reserved_until IS NULL;
    CREATE INDEX jobs_reserved ON jobs (status, reserved_until) WHERE status = 'pending' AND reserved_until IS NOT NULL;
    DROP INDEX jobs_queue;
    CREATE TRIGGER jobs_reserved_at_submit AFTER INSERT ON jobs
        WHEN NEW.status = 'pending' AND NEW.claims IS NOT NULL BEGIN {_RESERVE} END;
    CREATE TRIGGER jobs_reserved_again AFTER UPDATE OF status, run_at ON jobs
        WHEN NEW.status = 'pending' AND NEW.claims IS NOT NULL BEGIN {_RESERVE} END;
    CREATE TRIGGER jobs_reserved_no_more AFTER UPDATE OF status ON jobs
        WHEN OLD.status = 'pending' AND NEW.status <> 'pending' AND OLD.reserved_until IS NOT NULL BEGIN
        UPDATE jobs SET reserved_until = NULL WHERE id = NEW.id;
        DELETE FROM job_claims WHERE job_id = NEW.id;
    END;
    """,
    # 11: a job remembers the schedule that made it (a tick or a run on demand), so that deleting the
    # schedule finds its pending jobs. Older jobs are known by their tick; older runs on demand are not known.
    """
    ALTER TABLE jobs ADD COLUMN schedule TEXT;
    UPDATE jobs SET schedule = substr(schedule_tick, 1, instr(schedule_tick, ':') - 1) WHERE schedule_tick IS NOT NULL;
    CREATE INDEX jobs_schedule_pending ON jobs (schedule) WHERE schedule IS NOT NULL AND status = 'pending';
    """,
    # 12: concurrency slots: at most this many jobs of a type processing at once (NULL: no limit).
    """
    ALTER TABLE types ADD COLUMN concurrency INTEGER;
    """,
    # 13: why a schedule's last tick made no job ({"tick", "detail"} as JSON; NULL once a tick works again).
    """
    ALTER TABLE schedules ADD COLUMN last_error TEXT;
    """,
    _DROP_TYPE_QUEUE,
    _HOST_CLOCKS,
    _EVENT_OUTCOMES,
]


# The PostgreSQL schema as of SQLite's migration 13 (one script, not SQLite's history). JSON stays text, as
# SQLite keeps it (what a client sent is given back as SQLite gives it); the dialect casts it to jsonb where
# SQL reads into it. Times are Unix seconds (double precision), read from the store's clock as on SQLite.
_POSTGRES_SCHEMA = """
CREATE TABLE submissions (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    batch INTEGER NOT NULL,
    jobs INTEGER NOT NULL
);
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'pending', 'processing', 'done', 'failed', 'cancelled')),
    parameters TEXT NOT NULL,
    result TEXT,
    error TEXT,
    priority INTEGER NOT NULL,
    run_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    budget_start INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout DOUBLE PRECISION NOT NULL,
    backoff_base DOUBLE PRECISION NOT NULL,
    backoff_max DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    assignee TEXT,
    attempt INTEGER,
    lease_expires_at DOUBLE PRECISION,
    progress DOUBLE PRECISION,
    schedule_tick TEXT UNIQUE,
    submission BIGINT REFERENCES submissions (id),
    claims TEXT,
    claim_window DOUBLE PRECISION,
    reserved_until DOUBLE PRECISION,
    schedule TEXT
);
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_type_queue ON jobs (type, priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_submission ON jobs (submission) WHERE submission IS NOT NULL;
CREATE INDEX jobs_open_queue ON jobs (status, priority DESC, run_at, id)
    WHERE status = 'pending' AND reserved_until IS NULL;
CREATE INDEX jobs_type_open_queue ON jobs (type, priority DESC, run_at, id)
    WHERE status = 'pending' AND reserved_until IS NULL;
CREATE INDEX jobs_reserved ON jobs (status, reserved_until) WHERE status = 'pending' AND reserved_until IS NOT NULL;
CREATE INDEX jobs_schedule_pending ON jobs (schedule) WHERE schedule IS NOT NULL AND status = 'pending';
CREATE TABLE attempts (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('processing', 'done', 'failed', 'expired', 'cancelled')),
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    result TEXT,
    error TEXT,
    PRIMARY KEY (job_id, id)
);
-- seq orders a transaction's events until `_PostgresEngine.commit` gives them their ids.
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id BIGINT UNIQUE,
    job_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    job TEXT NOT NULL,
    detail TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX events_unnumbered ON events (seq) WHERE id IS NULL;
CREATE INDEX events_job ON events (job_id, id);
CREATE INDEX events_results ON events (job_id, id) WHERE result IS NOT NULL;
CREATE INDEX events_errors ON events (job_id, id) WHERE error IS NOT NULL;
CREATE TABLE event_counter (last BIGINT NOT NULL);
INSERT INTO event_counter (last) VALUES (0);
CREATE TABLE types (
    name TEXT PRIMARY KEY,
    timeout DOUBLE PRECISION,
    max_attempts INTEGER,
    backoff_base DOUBLE PRECISION,
    backoff_max DOUBLE PRECISION,
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL,
    retain DOUBLE PRECISION,
    parameters_schema TEXT,
    result_schema TEXT,
    labels TEXT,
    claim_window DOUBLE PRECISION,
    concurrency INTEGER
);
CREATE TABLE progress (
    job_id BIGINT NOT NULL,
    attempt_id INTEGER NOT NULL,
    id BIGINT NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, attempt_id, id),
    FOREIGN KEY (job_id, attempt_id) REFERENCES attempts (job_id, id) ON DELETE CASCADE
);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'worker', 'client')),
    hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION
);
CREATE TABLE workers (name TEXT PRIMARY KEY, last_seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    parameters TEXT NOT NULL,
    every TEXT NOT NULL,
    timezone TEXT NOT NULL,
    next_run_at DOUBLE PRECISION NOT NULL,
    last_run_at DOUBLE PRECISION,
    last_job_id BIGINT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_error TEXT
);
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token TEXT NOT NULL REFERENCES tokens (name) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_token ON sessions (token);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE TABLE job_counts (
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    number INTEGER NOT NULL,
    PRIMARY KEY (type, status)
);
CREATE TABLE type_versions (
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    settings TEXT,
    changed TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (type, version)
);
CREATE TABLE job_claims (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, key, value)
);
CREATE INDEX job_claims_queue ON job_claims (key, value, priority DESC, run_at, job_id);
-- SQLite's triggers jobs_counted_in/on/out and jobs_reserved_*, as one PL/pgSQL function each.
CREATE FUNCTION lazyboss_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_counts SET number = number - 1 WHERE type = OLD.type AND status = OLD.status;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (type, status, number) VALUES (NEW.type, NEW.status, 1)
            ON CONFLICT (type, status) DO UPDATE SET number = job_counts.number + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION lazyboss_count_jobs();
CREATE TRIGGER jobs_counted_on AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status <> NEW.status) EXECUTE FUNCTION lazyboss_count_jobs();
CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION lazyboss_count_jobs();
CREATE FUNCTION lazyboss_reserve_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' AND NEW.claims IS NOT NULL THEN
        UPDATE jobs SET reserved_until = NEW.run_at + COALESCE(NEW.claim_window, 'Infinity') WHERE id = NEW.id;
        DELETE FROM job_claims WHERE job_id = NEW.id;
        INSERT INTO job_claims (job_id, key, value, priority, run_at)
            SELECT NEW.id, claim.key, COALESCE(choice.value, claim.value #>> '{}'), NEW.priority, NEW.run_at
            FROM jsonb_each(NEW.claims::jsonb) AS claim
            LEFT JOIN jsonb_array_elements_text(
                CASE jsonb_typeof(claim.value) WHEN 'array' THEN claim.value END) AS choice (value) ON true;
    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status <> 'pending'
            AND OLD.reserved_until IS NOT NULL THEN
        UPDATE jobs SET reserved_until = NULL WHERE id = NEW.id;
        DELETE FROM job_claims WHERE job_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_reserved_at_submit AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION lazyboss_reserve_job();
CREATE TRIGGER jobs_reserved_again AFTER UPDATE OF status, run_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION lazyboss_reserve_job();
"""
# PostgreSQL's migrations after its schema, each a script. A claim of given types looks for lapsed
# reservations in an index of its own: without statistics (a new database, or the minute after a large
# submit, until autovacuum analyzes) the planner took jobs_type_queue for them and read the type's whole
# pending queue, under the write lock, on every claim.
_POSTGRES_MIGRATIONS = [
    _POSTGRES_SCHEMA,
    """CREATE INDEX jobs_type_lapsed ON jobs (type, priority DESC, run_at, id)
       WHERE status = 'pending' AND reserved_until IS NOT NULL""",
    _DROP_TYPE_QUEUE,  # SQLite's migration 14
    _HOST_CLOCKS,  # and 15
    _EVENT_OUTCOMES,  # and 16
]


def _sql_statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time (a trigger's body holds semicolons too)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                yield statement
            statement = ""


# The queue, in SQL both engines speak.
_QUEUE_ORDER = "ORDER BY priority DESC, run_at, id"
_PAUSED_TYPES = "SELECT name FROM types WHERE paused <> 0"
_UNPAUSED = f"jobs.type NOT IN ({_PAUSED_TYPES})"
# A type with a concurrency limit has a free slot while fewer of its jobs are processing (counted in
# `job_counts`, which triggers keep in the same transaction: exact across threads and processes).
_PROCESSING = "(SELECT number FROM job_counts WHERE job_counts.type = types.name AND job_counts.status = 'processing')"
_FULL_TYPES = f"SELECT name FROM types WHERE {_PROCESSING} >= concurrency"
_HAS_ROOM = f"jobs.type NOT IN ({_FULL_TYPES})"
# How many more jobs of a job's type may start (NULL: no limit).
_ROOM_LEFT = f"(SELECT concurrency - COALESCE({_PROCESSING}, 0) FROM types WHERE types.name = jobs.type)"
_DUE = f"jobs.status = 'pending' AND jobs.run_at <= ? AND {_UNPAUSED} AND {_HAS_ROOM}"
# Which jobs a claim may take: open ones (no claims, or their window passed), and those reserved for the
# worker's labels. Each piece is found through its own index; `next_jobs` takes the best of them.
_OPEN = "jobs.reserved_until IS NULL"  # the indexes jobs_open_queue and jobs_type_open_queue
_LAPSED = "jobs.reserved_until <= ?"  # the window passed, but the reaper has not opened the job yet: jobs_reserved
_EVENT_CHANGES = ("parameters", "result", "error")
# The columns of a new job, as submitting gives them.
_JOB_COLUMNS = (
    "type",
    "status",
    "parameters",
    "priority",
    "run_at",
    "max_attempts",
    "timeout",
    "backoff_base",
    "backoff_max",
    "created_at",
    "updated_at",
    "submission",
    "schedule",
    "schedule_tick",
    "claims",
    "claim_window",
)
# The most rows one multi-row INSERT takes (with 16 columns: 4,096 parameters, within SQLite's 32,766
# and PostgreSQL's 65,535).
_ROWS_A_STATEMENT = 256


@functools.lru_cache(maxsize=32)
def _insert_rows(table: str, columns: tuple[str, ...], count: int, returning: str = "") -> str:
    """`INSERT INTO table (columns) VALUES (?, ...), ...` for `count` rows, and `RETURNING returning` if given.

    Bound values cost SQLite a fraction of what unpacking the rows from one
    JSON parameter does (json_extract parses each row again for every column).
    """
    row = f"({', '.join('?' * len(columns))})"
    returned = f" RETURNING {returning}" if returning else ""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * count)}{returned}"


def _row_chunks(rows: list[tuple]) -> Iterator[list[tuple]]:
    """`rows` in pieces for `_insert_rows`: _ROWS_A_STATEMENT at a time, then the rest in powers of two, so
    that each connection compiles (and keeps) a statement for a few sizes, not one for every batch's size."""
    start = 0
    while start < len(rows):
        size = min(_ROWS_A_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
        yield rows[start : start + size]
        start += size


_ATTEMPT_COLUMNS = ("job_id", "id", "worker", "status", "started_at")  # of an attempt as a claim begins it


class _SQLiteSQL:
    """The SQL that SQLite and PostgreSQL spell differently, as SQLite spells it.

    The primitives come first (static methods and two texts); `_PostgresSQL`
    overrides them, and nothing else. The pieces the store's statements are
    made of are built from them below: the public shapes of a job, an attempt
    and a schedule (built by the database itself, so that an event's snapshot,
    a batch's answer and a GET all come from one definition), what an event
    stores and streams send, and the claim's queries. Each engine is one of
    these (`store.engine`): the store's statements are the same text for both
    but for what its engine gives.
    """

    # -- the primitives

    @staticmethod
    def time(column: str) -> str:
        """SQL rendering a Unix-time column as RFC 3339 UTC with milliseconds."""
        return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column}, 'unixepoch')"

    @staticmethod
    def json(text: str) -> str:
        """SQL for a column of JSON text as a JSON value (inside an object: not a string)."""
        return f"json({text})"

    building_objects = "json_object"  # the function building a JSON object from names and values
    greatest = "MAX"  # the function giving the greatest of its arguments

    def object(self, **members: str | None) -> str:
        """SQL building a JSON object's text from its members' names and SQL values (None: left out)."""
        pairs = (f"'{name}', {value}" for name, value in members.items() if value is not None)
        return f"{self.building_objects}({', '.join(pairs)})"

    @staticmethod
    def member(document: str, name: str) -> str:
        """SQL for the member `name` (a plain word) of a JSON object's text, as an SQL value."""
        return f"json_extract({document}, '$.{name}')"

    @staticmethod
    def listed(sql_type: str, array: str = "?") -> str:
        """A query of the items of a JSON array's text (numbers or strings, of `sql_type`), as `value`."""
        return f"SELECT value FROM json_each({array})"

    @staticmethod
    def listed_in_order(sql_type: str, array: str = "?") -> str:
        """`listed`, with each item's place in the array as `ordinal`."""
        return f"SELECT key AS ordinal, value FROM json_each({array})"

    @staticmethod
    def array_of(item: str, rows: str, order: str) -> str:
        """SQL for the text of a JSON array of `item` (SQL building a JSON value's text) for each row of the
        FROM clause `rows`, in `order`."""
        # SQLite does not flatten a sorted subquery into the aggregate around it: the order holds.
        return f"(SELECT json_group_array(json(item)) FROM (SELECT {item} AS item FROM {rows} ORDER BY {order}))"

    @staticmethod
    def rows(columns: dict[str, str], array: str = "?") -> str:
        """A query of a JSON array of arrays as rows: `ordinal`, their order, then `columns` (name: SQL type)."""
        picked = "".join(f", json_extract(value, '$[{number}]') AS {name}" for number, name in enumerate(columns))
        return f"SELECT key AS ordinal{picked} FROM json_each({array})"

    @staticmethod
    def members_of(document: str) -> str:
        """A table of a JSON object's members, as `key` and `value` (text)."""
        return f"json_each({document})"

    @staticmethod
    def claims_met(labels: dict[str, str]) -> tuple[str, list]:
        """SQL true when `labels` meet every claim of the row of `jobs` (a label's value is the claim's, or
        one of the claim's list), and its parameters."""
        labels_json = _encode(labels)
        return (
            """NOT EXISTS (SELECT 1 FROM json_each(jobs.claims) AS claim
            WHERE json_extract(?, '$."' || claim.key || '"') IS NULL
            OR json_extract(?, '$."' || claim.key || '"') NOT IN
                (SELECT value FROM json_each(CASE claim.type WHEN 'array' THEN claim.value
                                             ELSE json_array(claim.value) END)))""",
            [labels_json, labels_json],
        )

    @staticmethod
    def lock_claimable(ids: str) -> str:
        """A query of the jobs (ids from the query `ids`) a claim takes: all of them here, where the one
        writer claims alone."""
        return ids

    # What `events.job` holds (the job without its large fields), and what streams read of it.
    stores_large_members = True  # their members are there, as nulls: old files have them filled in
    small_event_job = "json_remove(events.job, '$.parameters', '$.result', '$.error')"

    # -- the pieces built from them

    def __init__(self) -> None:
        json = self.json
        self.job_json = self.job_view(json("parameters"), json("result"), json("error"))
        # A claimed job as the worker gets it: `startedAt` is when its attempt began.
        self.claimed_job_json = self.job_view(
            json("parameters"), json("result"), json("error"), startedAt=self.time("updated_at")
        )
        # A job in flight on the status page: with when its attempt began.
        self.running_job_json = self.job_view(
            json("parameters"),
            json("result"),
            json("error"),
            started_at=f"(SELECT {self.time('started_at')} FROM attempts WHERE job_id = jobs.id AND id = jobs.attempt)",
        )
        # What an event stores (INSERT ... SELECT from `jobs`): the job without its large fields, its result
        # and error only when they changed since its last event ('' for its attempt's: see `stored`), and
        # then that attempt.
        large = "NULL" if self.stores_large_members else None
        small = self.job_view(large, large, large)
        # The job's last attempt: a failure with attempts left has already put the job back (no `jobs.attempt`).
        last_attempt = "(SELECT MAX(id) FROM attempts WHERE attempts.job_id = jobs.id)"
        attempts = {field: self.outcome(field, "jobs.id", last_attempt) for field in ("result", "error")}

        def changed(field: str) -> str:
            last = self.recorded(field, "jobs.id")
            return f"""CASE WHEN jobs.{field} = {attempts[field]}
                THEN CASE WHEN jobs.{field} = {last} THEN NULL ELSE '' END
                ELSE NULLIF(COALESCE(jobs.{field}, 'null'), {last}) END"""

        self.event_columns = f"""{small}, {changed("result")}, {changed("error")},
            CASE WHEN jobs.result = {attempts["result"]} OR jobs.error = {attempts["error"]} THEN {last_attempt} END"""
        # A new job's first event: it has no result or error yet, nor earlier events to compare with.
        self.submitted_event_columns = f"{small}, NULL, NULL"
        # An event's job as streams send it (from `events LEFT JOIN jobs`), as columns that `_Event.from_row`
        # joins: its small fields, and of the large ones only those the event set: all three with `submitted`,
        # a result or an error with the event that changed it. A follower of a 1 MB job gets its megabyte
        # once, not with every progress event; merging each event onto the job before rebuilds the job as
        # it was then.
        self.event_job_json = f"""{self.small_event_job} AS job,
            CASE events.kind WHEN 'submitted' THEN {json("jobs.parameters")} END AS parameters,
            CASE events.kind WHEN 'submitted' THEN COALESCE({json("events.result")}, 'null')
                ELSE {json(self.stored("result", "events"))} END AS result,
            CASE events.kind WHEN 'submitted' THEN COALESCE({json("events.error")}, 'null')
                ELSE {json(self.stored("error", "events"))} END AS error"""
        # A progress event stores the ids of the items it reported, whose data is kept once, in `progress`
        # (a noisy job's output would take its room twice); streams send the items whole. Progress events
        # of older files hold their items themselves, and are sent as they are.
        ids, attempt = self.member("events.detail", "ids"), self.member("events.detail", "attempt")
        reported = f"""({self.listed_in_order("BIGINT", ids)}) AS listed JOIN progress
            ON progress.job_id = events.job_id AND progress.attempt_id = CAST({attempt} AS INTEGER)
            AND progress.id = listed.value"""
        items = self.array_of(
            self.object(id="progress.id", event="progress.event", data="progress.data"), reported, "listed.ordinal"
        )
        self.event_detail = f"""CASE WHEN events.kind = 'progress' AND {ids} IS NOT NULL
            THEN CAST({self.object(attempt=attempt, events=json(items))} AS TEXT) ELSE events.detail END AS detail"""
        self.attempt_json = self.object(
            id="CAST(id AS TEXT)",
            job="CAST(job_id AS TEXT)",
            worker="worker",
            status="status",
            started_at=self.time("started_at"),
            finished_at=self.time("finished_at"),
            result=json("result"),
            error=json("error"),
        )
        self.schedule_json = self.object(
            name="name",
            type="type",
            parameters=json("parameters"),
            every="every",
            timezone="timezone",
            next_run_at=self.time("next_run_at"),
            last_run_at=self.time("last_run_at"),
            last_job="CAST(last_job_id AS TEXT)",
            last_error=json("last_error"),
            created_at=self.time("created_at"),
        )

    def job_view(self, parameters: str | None, result: str | None, error: str | None, **more: str) -> str:
        """SQL for a job's public shape from a row of `jobs`, with these expressions for its large fields
        (None: left out) and `more` members at its end."""
        time = self.time
        return self.object(
            id="CAST(id AS TEXT)",
            type="type",
            status="status",
            parameters=parameters,
            result=result,
            error=error,
            priority="priority",
            run_at=time("run_at"),
            attempts="attempts",
            max_attempts="max_attempts",
            timeout="timeout",
            created_at=time("created_at"),
            updated_at=time("updated_at"),
            finished_at=time("finished_at"),
            assignee="assignee",
            attempt="CAST(attempt AS TEXT)",
            progress="progress",
            claims=self.json("claims"),
            claim_window="claim_window",
            **more,
        )

    @staticmethod
    def recorded(field: str, job: str, up_to: str = "") -> str:
        """SQL for the `result` or `error` (JSON text) that a job's events last recorded, up to event `up_to`."""
        bound = f"AND change.id <= {up_to}" if up_to else ""
        return f"""COALESCE((SELECT {_SQLiteSQL.stored(field, "change")} FROM events AS change
            WHERE change.job_id = {job} {bound} AND change.{field} IS NOT NULL
            ORDER BY change.id DESC LIMIT 1), 'null')"""

    @staticmethod
    def stored(field: str, event: str) -> str:
        """SQL for the `result` or `error` an event (the row `event` of `events`) set, as JSON text (NULL: it
        set none). '' stands for its attempt's (`outcome_of`): the job and its attempt keep a result
        already, and a third copy of a worker's 64 KiB of output in the event was one too many."""
        attempts = _SQLiteSQL.outcome(field, f"{event}.job_id", f"{event}.outcome_of")
        return f"(CASE {event}.{field} WHEN '' THEN {attempts} ELSE {event}.{field} END)"

    @staticmethod
    def outcome(field: str, job: str, attempt: str) -> str:
        """SQL for the `result` or `error` of an attempt (JSON text), by its job's id and its own."""
        return (
            f"(SELECT outcome.{field} FROM attempts AS outcome WHERE outcome.job_id = {job} AND outcome.id = {attempt})"
        )

    most_type_heads: float = math.inf  # a head per type, however many (SQLite plans them at once)

    def next_jobs(self, types: list[str] | None, labels: dict[str, str], now: float, limit: int) -> tuple[str, list]:
        """SQL for the ids of the most urgent due jobs a worker may claim (at most `limit`), with its parameters.

        Of any type, or of the given ones: then each type is looked up in its
        own index and the best of their heads win, so a backlog of other types
        is never scanned. Past `most_type_heads` types the named ones are
        looked up together instead (PostgreSQL plans a union of hundreds of
        heads for longer than one lookup takes to run). Reserved jobs are
        looked up by each of the worker's labels in `job_claims`, so jobs
        reserved for others are never read.
        """

        def head(where: str, order: str = _QUEUE_ORDER, source: str = "jobs") -> str:
            return (
                f"SELECT * FROM (SELECT jobs.id, jobs.priority, jobs.run_at FROM {source} WHERE {where} {order} "
                "LIMIT ?) AS head"
            )

        heads, parameters = [], []
        named = f"jobs.type IN ({', '.join('?' * len(types or ()))})"
        if types and len(types) > self.most_type_heads:
            heads.append(head(f"{named} AND {_DUE} AND {_OPEN}"))
            parameters += [*types, now, limit]
        elif types:
            opened = " UNION ALL ".join([head(f"jobs.type = ? AND {_DUE} AND {_OPEN}")] * len(types))
            heads.append(f"SELECT * FROM ({opened}) AS opened")
            parameters += [value for job_type in types for value in (job_type, now, limit)]
        else:
            heads.append(head(f"{_DUE} AND {_OPEN}"))
            parameters += [now, limit]
        of_types = f"AND {named}" if types else ""
        heads.append(head(f"{_DUE} AND {_LAPSED} {of_types}"))
        parameters += [now, now, *(types or []), limit]
        claims_met, met_parameters = self.claims_met(labels)
        for key, value in labels.items():
            heads.append(
                head(
                    f"job_claims.key = ? AND job_claims.value = ? AND jobs.id = job_claims.job_id AND {_DUE} "
                    f"AND jobs.reserved_until > ? {of_types} AND {claims_met}",
                    "ORDER BY job_claims.priority DESC, job_claims.run_at, job_claims.job_id",
                    "job_claims CROSS JOIN jobs",  # CROSS: SQLite reads job_claims first, in its order
                )
            )
            parameters += [key, value, now, now, *(types or []), *met_parameters, limit]
        return f"SELECT id FROM ({' UNION '.join(heads)}) AS heads {_QUEUE_ORDER} LIMIT ?", [*parameters, limit]

    def claimable(
        self, types: list[str] | None, labels: dict[str, str], now: float, limit: int, budget: int
    ) -> tuple[str, list]:
        """SQL for the ids of the jobs a claim takes, with its parameters: `next_jobs`'s, no more of a type
        than it has free slots, and up to the one whose parameters fill `budget` bytes (the first is always
        taken), so that a batch of large jobs stays about that size."""
        query, parameters = self.next_jobs(types, labels, now, limit)
        if limit == 1:  # the first is always taken, and `next_jobs` gives jobs only of types with a free slot
            return self.lock_claimable(query), parameters
        return (
            self.lock_claimable(
                f"""SELECT id FROM (SELECT id, SUM(length(parameters)) OVER ({_QUEUE_ORDER}) - length(parameters)
                    AS before, ROW_NUMBER() OVER (PARTITION BY type {_QUEUE_ORDER}) AS nth, {_ROOM_LEFT} AS room
                FROM jobs WHERE id IN ({query})) AS fitting WHERE before < ? AND (room IS NULL OR nth <= room)"""
            ),
            [*parameters, budget],
        )


class _PostgresSQL(_SQLiteSQL):
    """The SQL that PostgreSQL spells its own way: `_SQLiteSQL`'s primitives, in PostgreSQL's words.

    JSON is kept as text, as on SQLite (what a client sent is given back as
    it came), and read as `json` where SQL looks into it; `json` (not `jsonb`)
    keeps a job's members in their order.
    """

    # A claim naming 500 types planned for 0.4 s as a union of one head per type, under the write lock;
    # as one lookup of them all it ran in 5-25 ms (with 200,000 jobs of another type ahead).
    most_type_heads = 20

    @staticmethod
    def time(column: str) -> str:
        # Rounded to the millisecond as SQLite's strftime rounds, in its steps (doubles, through the
        # milliseconds of a julian day): not always to the nearest, but the same, so that a database copied
        # from one engine to the other shows its times as they were (to_char alone would cut them).
        double = "double precision"
        julian = f"floor(CAST({column} AS {double}) * 1000 + {_JULIAN_UNIX_MS} + CAST(0.5 AS {double}))"
        moment = f"to_timestamp(({julian} - {_JULIAN_UNIX_MS}) / 1000) AT TIME ZONE 'UTC'"
        return f"""to_char({moment}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

    @staticmethod
    def json(text: str) -> str:
        return f"CAST({text} AS json)"

    building_objects = "json_build_object"  # read back as text: see `_PostgresEngine.connect`
    greatest = "GREATEST"

    @staticmethod
    def member(document: str, name: str) -> str:
        return f"(CAST({document} AS json) ->> '{name}')"

    @staticmethod
    def listed(sql_type: str, array: str = "?") -> str:
        return f"SELECT CAST(value AS {sql_type}) AS value FROM json_array_elements_text(CAST({array} AS json))"

    @staticmethod
    def listed_in_order(sql_type: str, array: str = "?") -> str:
        items = f"json_array_elements_text(CAST({array} AS json)) WITH ORDINALITY AS listed (value, ordinal)"
        return f"SELECT ordinal, CAST(value AS {sql_type}) AS value FROM {items}"

    @staticmethod
    def array_of(item: str, rows: str, order: str) -> str:
        # Joined as text: json_agg puts a line break between items, and an SSE data line must hold none.
        joined = f"string_agg(CAST({item} AS text), ',' ORDER BY {order})"
        return f"(SELECT '[' || COALESCE({joined}, '') || ']' FROM {rows})"

    @staticmethod
    def rows(columns: dict[str, str], array: str = "?") -> str:
        picked = "".join(
            f", CAST(item ->> {number} AS {sql_type}) AS {name}"
            for number, (name, sql_type) in enumerate(columns.items())
        )
        items = f"json_array_elements(CAST({array} AS json)) WITH ORDINALITY AS listed (item, ordinal)"
        return f"SELECT ordinal{picked} FROM {items}"

    @staticmethod
    def members_of(document: str) -> str:
        return f"json_each_text(CAST({document} AS json))"

    @staticmethod
    def claims_met(labels: dict[str, str]) -> tuple[str, list]:
        return (
            """NOT EXISTS (SELECT 1 FROM jsonb_each(CAST(jobs.claims AS jsonb)) AS claim
            WHERE NOT CASE jsonb_typeof(claim.value) WHEN 'array' THEN claim.value
                          ELSE jsonb_build_array(claim.value) END
                @> jsonb_build_array(CAST(? AS jsonb) -> claim.key))""",
            [_encode(labels)],
        )

    @staticmethod
    def lock_claimable(ids: str) -> str:
        # Replicas claim concurrently: each takes the rows it locks first and passes over those another
        # holds. Locking checks the row again as it is once locked, so a job claimed and committed
        # meanwhile (no longer pending) is not taken twice.
        return f"SELECT id FROM jobs WHERE id IN ({ids}) AND status = 'pending' FOR UPDATE SKIP LOCKED"

    # A new database: events store the job without its large members at all.
    stores_large_members = False
    small_event_job = "events.job"


# --------------------------------------------------------------------------
# Validation and SSE encoding
# --------------------------------------------------------------------------


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    """An integer within [low, high] (5.0 too: JSON, like JSON Schema, has no other 5), or Invalid naming the field."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(f"{name!r} must be an integer from {low} to {high}")
    return value


def _check_number(value: Any, name: str, low: float, high: float) -> float:
    """A number within [low, high] (an integer too big for a float counts as infinite), or Invalid naming the field."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(f"{name!r} must be a number from {low:g} to {high:g}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


_DECIMAL_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only, and below 2**63


def _as_id(text: str) -> int | None:
    """The number a decimal id (of a job, attempt, event or progress event) stands for, else None."""
    return int(text) if _DECIMAL_ID.fullmatch(text) else None


def _parse_id(text: str, what: str) -> int:
    """The integer behind a public id, or NotFound for anything that is not one."""
    number = _as_id(text)
    if number is None:
        raise NotFound(f"no {what} {text}")
    return number


# How deep a JSON body may nest: far below where Python's or SQLite's parsers give up.
_JSON_MAX_DEPTH = 100


def _refuse_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number")
    return number


# One decoder for every body: json.loads given these hooks would build one (and its scanner) per call.
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_json_constant, parse_float=_finite_float)


def _parse_json(data: bytes | str) -> Any:
    """A request body's JSON, or a `bad_json` refusal: no NaN or Infinity, no numbers beyond a double,
    no nesting deeper than `_JSON_MAX_DEPTH` (all would fail later, in SQLite's JSON or a recursion)."""
    try:
        if isinstance(data, bytes):  # as json.loads reads bytes: UTF-8, -16 or -32
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        value = _STRICT_JSON.decode(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        detail = "it nests too deeply" if isinstance(error, RecursionError) else str(error)
        raise LazybossError(f"the body is not valid JSON: {detail}", "bad_json") from None
    containers, depth = [value], 0
    while containers:
        depth += 1
        if depth > _JSON_MAX_DEPTH:
            raise LazybossError(f"the body nests deeper than {_JSON_MAX_DEPTH} levels", "bad_json")
        containers = [
            child
            for container in containers
            if isinstance(container, (list, dict))
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (list, dict))
        ]
    return value


# The most jobs one claim may ask for.
_MAX_CLAIM = 1000
# The most jobs one batch may submit: its transaction holds every other write back (10,000 take 0.2 s,
# the 75,000 a 1 MiB body can hold 1.4 s) and its answer lists them all (3 MiB, against 25 MiB).
_MAX_BATCH = 10_000

# The most values a filter may name: a claim asks SQLite for one compound SELECT term per type,
# and SQLite allows 500.
_MAX_FILTER_VALUES = 500


def _distinct(values: list[str], name: str) -> list[str]:
    """A filter's values without repeats, or Invalid when they are more than `_MAX_FILTER_VALUES`."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) > _MAX_FILTER_VALUES:
        raise Invalid(f"{name!r} names {len(distinct)} values; the limit is {_MAX_FILTER_VALUES}")
    return distinct


@dataclass
class JobSpec:
    """A validated submission, before the type's settings and defaults fill it in."""

    type: str
    parameters: Any = None
    priority: int | None = None
    run_at: float | None = None
    delay: float | None = None  # seconds after the submit is committed; run_at wins
    max_attempts: int | None = None
    timeout: float | None = None
    hold: bool = False  # stored `held`: never claimed until released
    claims: dict | None = None  # key -> a value or a list of them, that a worker's labels must match
    claim_window: float | None = None  # seconds from run_at that only matching workers may claim it


_SUBMIT_FIELDS = {"type", "parameters", "priority", "run_at", "delay", "max_attempts", "timeout", "hold"}
_SUBMIT_FIELDS |= {"claims", "claim_window"}
_MAX_WINDOW = 366 * 86400.0


def _check_claims(value: Any, name: str) -> dict | None:
    """A job's claims: as labels, but a value may also be a list of values, any of which matches
    (repeats dropped); None when there are none."""
    if not isinstance(value, dict) or len(value) > _MAX_LABELS:
        raise Invalid(f"{name!r} must be an object of at most {_MAX_LABELS} keys, each a string or a list of them")
    claims: dict[str, Any] = {}
    for key, choices in value.items():
        listed = isinstance(choices, list)
        values = choices if listed else [choices]
        if not 0 < len(values) <= _MAX_LABELS:
            raise Invalid(f"{name}.{key}: a string, or a list of 1 to {_MAX_LABELS} strings")
        for item in values:
            _check_labels({key: item}, name)
        claims[key] = list(dict.fromkeys(values)) if listed else choices
    return claims or None


def parse_job_spec(body: Any, where: str = "") -> JobSpec:
    """Validate one submitted job object; raise Invalid naming the bad field."""
    if not isinstance(body, dict):
        raise Invalid(f"{where}a job must be a JSON object with at least a 'type'")
    unknown = sorted(set(body) - _SUBMIT_FIELDS)
    if unknown:
        raise Invalid(f"{where}unknown field {unknown[0]!r}; known: {', '.join(sorted(_SUBMIT_FIELDS))}")
    job_type = body.get("type")
    if not isinstance(job_type, str) or not _TYPE_NAME.fullmatch(job_type):
        raise Invalid(f"{where}'type' must be a string of 1-100 letters, digits, '_', '.', ':' or '-'")
    spec = JobSpec(type=job_type, parameters=body.get("parameters", {}))
    if "priority" in body:
        spec.priority = _check_int(body["priority"], f"{where}priority", -(2**31), 2**31 - 1)
    if "max_attempts" in body:
        spec.max_attempts = _check_int(body["max_attempts"], f"{where}max_attempts", 1, 1000)
    if "timeout" in body:
        spec.timeout = _check_number(body["timeout"], f"{where}timeout", 0.001, 366 * 86400)
    if "run_at" in body and "delay" in body:
        raise Invalid(f"{where}give 'run_at' or 'delay', not both")
    if "run_at" in body:
        try:
            spec.run_at = parse_time(body["run_at"])
        except ValueError as error:
            raise Invalid(f"{where}run_at: {error}") from None
    if "delay" in body:
        spec.delay = _check_number(body["delay"], f"{where}delay", 0, 366 * 86400)
    if "hold" in body:
        if not isinstance(body["hold"], bool):
            raise Invalid(f"{where}'hold' must be true or false")
        spec.hold = body["hold"]
    if body.get("claims") is not None:
        spec.claims = _check_claims(body["claims"], f"{where}claims")
    if "claim_window" in body:
        spec.claim_window = _check_number(body["claim_window"], f"{where}claim_window", 0, _MAX_WINDOW)
    return spec


@dataclass
class _Report:
    """A worker's report on one of its attempts: `kind` is "result" or "error", `value` any JSON."""

    job: str
    attempt: str
    kind: str
    value: Any


def _parse_reports(body: Any) -> list[_Report]:
    """Validate POST /jobs/reports: a list of {job, attempt, result} or {job, attempt, error}."""
    if not isinstance(body, list) or not body:
        raise Invalid('send a list of reports, each {"job": id, "attempt": id, "result": ...} or "error" instead')
    reports = []
    for index, item in enumerate(body):
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("job", "attempt")):
            raise Invalid(f"report {index}: an object with 'job' and 'attempt' ids (strings, as the claim gave them)")
        kinds = [kind for kind in ("result", "error") if kind in item]
        unknown = sorted(set(item) - {"job", "attempt", "result", "error"})
        if len(kinds) != 1 or unknown:
            raise Invalid(f"report {index}: give either 'result' or 'error' (and only 'job' and 'attempt' besides)")
        reports.append(_Report(item["job"], item["attempt"], kinds[0], item[kinds[0]]))
    return reports


ROLES = ("admin", "worker", "client")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# The columns of `types` that PUT /types/{type} sets (`_parse_type_settings` gives them by these names).
_TYPE_COLUMNS = (
    "timeout",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "paused",
    "retain",
    "parameters_schema",
    "result_schema",
    "labels",
    "claim_window",
    "concurrency",
)
# The fields of PUT /types/{type}.
_TYPE_FIELDS = ("timeout", "max_attempts", "backoff", "paused", "retain")
_TYPE_FIELDS += ("parameters_schema", "result_schema", "labels", "claim_window", "concurrency")
_MAX_CONCURRENCY = 100_000
_LABEL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_LABELS = 32
_MAX_LABEL_VALUE = 200


def _check_labels(value: Any, name: str) -> dict[str, str]:
    """Labels (or claims' keys): an object of at most `_MAX_LABELS` keys of letters, digits, `_.-`, each with
    a string of up to `_MAX_LABEL_VALUE` characters without NUL; else Invalid naming the field."""
    if not isinstance(value, dict) or len(value) > _MAX_LABELS:
        raise Invalid(f"{name!r} must be an object of at most {_MAX_LABELS} keys, each with a string")
    for key, text in value.items():
        if not _LABEL_KEY.fullmatch(key):
            raise Invalid(f"{name}: key {key!r} is not 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(text, str) or len(text) > _MAX_LABEL_VALUE:
            raise Invalid(f"{name}.{key} must be a string of at most {_MAX_LABEL_VALUE} characters")
        if "\0" in text:  # SQLite's JSON functions end a text there: "a\0x" would be matched as "a"
            raise Invalid(f"{name}.{key} must not hold NUL (U+0000)")
    return value


def _parse_label_filter(values: list[str], name: str = "label", separator: str = ":") -> dict[str, str]:
    """`?label=key:value` (repeated; `lazyboss work --label key=value`) as labels; Invalid for a value
    without its key, a key given twice with two values, or more labels than a worker may have."""
    labels: dict[str, str] = {}
    for value in values:
        key, colon, text = value.partition(separator)
        if not colon:
            raise Invalid(f"{name} {value!r}: give KEY{separator}VALUE, such as host{separator}pi-3")
        if key in labels and labels[key] != text:
            raise Invalid(f"{name}: {key!r} is given twice, as {labels[key]!r} and {text!r}")
        labels[key] = text
    return _check_labels(labels, name)


def _parse_type_settings(body: Any, check_schemas: bool = True) -> dict:
    """Validate PUT /types/{type}: the settings it names, as `types` columns (null: back to the default).

    A schema is checked here too (`_check_json_schema`): where the schema
    extra is not installed, setting one is refused. `lazyboss apply` leaves
    that to the server (`check_schemas=False`).
    """
    if not isinstance(body, dict):
        raise Invalid(f"send an object with any of {', '.join(_TYPE_FIELDS)}")
    unknown = sorted(set(body) - set(_TYPE_FIELDS))
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}; known: {', '.join(sorted(_TYPE_FIELDS))}")
    settings: dict[str, Any] = {}
    if "timeout" in body:
        settings["timeout"] = (
            None if body["timeout"] is None else _check_number(body["timeout"], "timeout", 0.001, 366 * 86400)
        )
    if "max_attempts" in body:
        value = body["max_attempts"]
        settings["max_attempts"] = None if value is None else _check_int(value, "max_attempts", 1, 1000)
    if "backoff" in body:
        backoff = {"base": None, "max": None} if body["backoff"] is None else body["backoff"]
        if not isinstance(backoff, dict) or set(backoff) - {"base", "max"}:
            raise Invalid('\'backoff\' is an object {"base": seconds, "max": seconds}')
        for key in ("base", "max"):
            if key in backoff:
                value = backoff[key]
                settings[f"backoff_{key}"] = (
                    None if value is None else _check_number(value, f"backoff.{key}", 0, 366 * 86400)
                )
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            raise Invalid("'paused' must be true or false")
        settings["paused"] = int(body["paused"])
    if "retain" in body:
        value = body["retain"]
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            settings["retain"] = None if value is None else _check_number(value, "retain", 0, _LONGEST_DURATION)
        else:
            try:
                settings["retain"] = parse_duration(value)
            except ValueError as error:
                raise Invalid(f"retain: {error}") from None
    for field in ("parameters_schema", "result_schema"):
        if field in body:
            schema = body[field]
            if schema is not None and check_schemas:
                _check_json_schema(schema, field)
            settings[field] = None if schema is None else _encode(schema)
    if "labels" in body:
        labels = body["labels"]
        settings["labels"] = None if labels is None or labels == {} else _encode(_check_labels(labels, "labels"))
    if "claim_window" in body:
        window = body["claim_window"]
        settings["claim_window"] = None if window is None else _check_number(window, "claim_window", 0, _MAX_WINDOW)
    if "concurrency" in body:
        limit = body["concurrency"]
        settings["concurrency"] = None if limit is None else _check_int(limit, "concurrency", 1, _MAX_CONCURRENCY)
    return settings


def _own_settings(row: sqlite3.Row | None) -> dict:
    """A type's own settings in the shape PUT /types/{type} takes, without those left at their default:
    what `lazyboss export` writes and a version records."""
    if row is None:
        return {}
    own: dict[str, Any] = {}
    for field in ("timeout", "max_attempts"):
        if row[field] is not None:
            own[field] = row[field]
    backoff = {key: row[f"backoff_{key}"] for key in ("base", "max") if row[f"backoff_{key}"] is not None}
    if backoff:
        own["backoff"] = backoff
    if row["paused"]:
        own["paused"] = True
    if row["retain"] is not None:
        own["retain"] = row["retain"]
    for field in ("parameters_schema", "result_schema", "labels"):
        if row[field] is not None:
            own[field] = json.loads(row[field])
    for field in ("claim_window", "concurrency"):
        if row[field] is not None:
            own[field] = row[field]
    return own


# -- JSON Schema (the optional `schema` extra: jsonschema)

_SCHEMA_EXTRA = "pip install 'lazyboss[schema]'"
_SCHEMA_DETAIL_LIMIT = 300  # characters of a validator's message kept: it may quote a large value


def _json_schema_package() -> Any:
    """The jsonschema package, imported on first use (it costs ~40 ms and ~8 MiB), or None where the
    `schema` extra (jsonschema, and regex for patterns that can be stopped) is not installed."""
    try:
        import jsonschema
        import regex  # noqa: F401
    except ImportError:
        return None
    return jsonschema


def _shortened(text: str, limit: int = _SCHEMA_DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_draft(schema: Any, field: str = "schema") -> Any:
    """The jsonschema validator class for a schema's `$schema` (2020-12 when it names none), or Invalid."""
    package = _json_schema_package()
    drafts = {
        cls.ID_OF(cls.META_SCHEMA).rstrip("#"): cls
        for cls in (
            package.Draft202012Validator,
            package.Draft201909Validator,
            package.Draft7Validator,
            package.Draft6Validator,
            package.Draft4Validator,
        )
    }
    if not isinstance(schema, dict) or "$schema" not in schema:
        return package.Draft202012Validator
    named = schema["$schema"]
    if not isinstance(named, str) or named.rstrip("#") not in drafts:
        raise Invalid(
            f"{field}: $schema {named!r} is not a draft lazyboss knows: use one of {', '.join(sorted(drafts))}"
        )
    return drafts[named.rstrip("#")]


def _unresolvable_reference(schema: Any, draft: Any, field: str) -> Invalid | None:
    """Invalid for the first `$ref` (or `$dynamicRef`) of a schema that does not resolve inside it: one to
    another document (lazyboss never fetches a schema from elsewhere), or to a `#/…` or `#anchor` that is
    not there. Ids and references are found as the schema's draft defines them (not inside `const`,
    `enum` or `examples`, which are data)."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    root = Resource.from_contents(schema, default_specification=specification_with(draft.ID_OF(draft.META_SCHEMA)))
    registry = Registry().with_resource(root.id() or "", root).crawl()
    pending = [(root, "")]
    while pending:
        resource, base = pending.pop()
        base = urllib.parse.urljoin(base, resource.id() or "")
        contents = resource.contents
        for keyword in ("$ref", "$dynamicRef") if isinstance(contents, dict) else ():
            reference = contents.get(keyword)
            if not isinstance(reference, str):
                continue
            try:
                target = registry.resolver(base_uri=base).lookup(reference).contents
            except Unresolvable:
                document = urllib.parse.urljoin(base, reference.partition("#")[0])
                if document not in registry:
                    return Invalid(
                        f"{field}: {keyword} {reference!r} points outside the schema; "
                        "lazyboss resolves '#…' references only"
                    )
                return Invalid(f"{field}: {keyword} {reference!r} points to nothing in the schema", "invalid_schema")
            except (LookupError, TypeError, ValueError):  # referencing's pointer stepping into a number or string
                target = None
            if not isinstance(target, (dict, bool)):  # every document checked against it would fail with a 500
                return Invalid(f"{field}: {keyword} {reference!r} points to no schema", "invalid_schema")
        pending += [(subresource, base) for subresource in resource.subresources()]
    return None


def _check_json_schema(schema: Any, field: str) -> Any:
    """A schema for `field` (parameters_schema, result_schema), checked against its draft's meta-schema;
    Invalid naming where it is wrong, or saying what to install where jsonschema is missing."""
    package = _json_schema_package()
    if package is None:
        raise Invalid(
            f"{field}: this server cannot check JSON Schema: install its schema extra ({_SCHEMA_EXTRA}) and restart",
            "schema_unsupported",
        )
    if not isinstance(schema, (dict, bool)):
        raise Invalid(f"{field} must be a JSON Schema: an object (or true or false)")
    draft = _schema_draft(schema, field)
    error = package.exceptions.best_match(draft(draft.META_SCHEMA).iter_errors(schema))
    if error is not None:
        raise Invalid(
            f"{field} is not a valid JSON Schema: at {error.json_path}: {_shortened(error.message)} "
            f"(rule {error.validator!r})",
            "invalid_schema",
        )
    unresolvable = _unresolvable_reference(schema, draft, field)
    if unresolvable is not None:
        raise unresolvable
    _check_patterns(schema, field)
    return schema


def _check_patterns(schema: Any, field: str) -> None:
    """Invalid for a `pattern` or `patternProperties` key that is not a regular expression, and for
    `unevaluatedProperties` in a schema with `patternProperties`: jsonschema matches those with Python's
    `re`, which no time limit can stop (see `_bounded_draft`)."""
    import regex

    pending, keywords = [(schema, "$")], set()
    while pending:
        node, path = pending.pop()
        if isinstance(node, list):
            pending += [(item, f"{path}[{index}]") for index, item in enumerate(node)]
        if not isinstance(node, dict):
            continue
        keywords.update(node)
        patterns = [(node["pattern"], f"{path}.pattern")] if isinstance(node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), dict):
            patterns += [(key, f"{path}.patternProperties") for key in node["patternProperties"]]
        for pattern, where in patterns:
            try:
                regex.compile(pattern)
            except regex.error as error:
                raise Invalid(
                    f"{field} is not a valid JSON Schema: at {where}: {pattern!r} is not a regular expression "
                    f"({error}) (rule 'format')",
                    "invalid_schema",
                ) from None
        pending += [(value, f"{path}.{key}") for key, value in node.items()]
    if {"unevaluatedProperties", "patternProperties"} <= keywords:
        raise Invalid(
            f"{field}: lazyboss does not take unevaluatedProperties in a schema with patternProperties "
            "(their patterns could not be stopped in time): use additionalProperties",
            "invalid_schema",
        )


# The longest that checking one submission's parameters (or one call's results) may take: past it they are
# refused, so that no schema, pattern or document holds the write lock (and the GIL) for long.
_SCHEMA_CHECK_SECONDS = 2.0
_RESULT_SCHEMAS_IN_USE = 60.0  # seconds a result_schema met keeps results checked before the write lock
# When the running thread's check must end (time.monotonic()): read by `_bounded_draft`'s keywords.
_SCHEMA_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("schema_deadline", default=math.inf)


def _json_identity(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal where JSON Schema calls values equal: 1 and 1.0, objects
    whatever their keys' order; never true and 1."""
    if isinstance(value, dict):
        return ("object", frozenset((key, _json_identity(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_json_identity(item) for item in value))
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    return value


def _bounded_draft(draft: Any) -> Any:
    """`draft`'s validator class, with every keyword checking `_SCHEMA_DEADLINE` first (a `$ref` loop or a
    schema whose work doubles at each reference is stopped), patterns matched by `regex` with a timeout
    (Python's `re` backtracks for hours, holding the GIL), and `uniqueItems` in linear time (jsonschema's
    compares objects pairwise: minutes for a 1 MiB array)."""
    import regex

    package = _json_schema_package()
    failure = package.exceptions.ValidationError

    def search(pattern: str, text: str) -> Any:
        left = _SCHEMA_DEADLINE.get() - time.monotonic()
        return regex.search(pattern, text, timeout=None if left == math.inf else max(left, 0.001))

    def pattern(validator: Any, expected: str, instance: Any, schema: dict) -> Iterator:
        if validator.is_type(instance, "string") and not search(expected, instance):
            yield failure(f"{instance!r} does not match {expected!r}")

    def pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Iterator:
        if validator.is_type(instance, "object"):
            for expected, subschema in patterns.items():
                for key, value in instance.items():
                    if search(expected, key):
                        yield from validator.descend(value, subschema, path=key, schema_path=expected)

    def additional_properties(validator: Any, additional: Any, instance: Any, schema: dict) -> Iterator:
        if not validator.is_type(instance, "object"):
            return
        patterns, named = schema.get("patternProperties", {}), schema.get("properties", {})
        extras = [key for key in instance if key not in named and not any(search(each, key) for each in patterns)]
        if validator.is_type(additional, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], additional, path=extra)
        elif not additional and extras:
            listed = ", ".join(repr(extra) for extra in sorted(extras))
            if patterns:
                verb = "does" if len(extras) == 1 else "do"
                yield failure(f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}")
            else:
                verb = "was" if len(extras) == 1 else "were"
                yield failure(f"Additional properties are not allowed ({listed} {verb} unexpected)")

    def unique_items(validator: Any, unique: bool, instance: Any, schema: dict) -> Iterator:
        if unique and validator.is_type(instance, "array"):
            if len({_json_identity(item) for item in instance}) < len(instance):
                yield failure(f"{_shortened(repr(instance))} has non-unique elements")

    def bounded(check: Callable) -> Callable:
        def keyword(validator: Any, value: Any, instance: Any, schema: dict) -> Any:
            if time.monotonic() > _SCHEMA_DEADLINE.get():
                raise TimeoutError
            return check(validator, value, instance, schema)

        return keyword

    replaced = {
        "pattern": pattern,
        "patternProperties": pattern_properties,
        "additionalProperties": additional_properties,
        "uniqueItems": unique_items,
    }
    keywords = {name: replaced.get(name, check) for name, check in draft.VALIDATORS.items()}
    return package.validators.extend(draft, {name: bounded(check) for name, check in keywords.items()})


def _schema_validator(schema: Any) -> Any:
    """A validator for a stored schema: bounded in time (`_bounded_draft`), and resolving references only
    inside the schema: its registry retrieves nothing, so no `$ref` is ever fetched (jsonschema's own
    would GET a URL, or read a file:// one)."""
    from referencing import Registry

    return _bounded_draft(_schema_draft(schema))(schema, registry=Registry())


def _schema_refusal(validator: Any, document: Any, what: str, code: str, deadline: float) -> Invalid | None:
    """Why `document` does not validate (the failing JSON path and rule), as Invalid; None when it does.
    Its check must end by `deadline` (time.monotonic()), else it is refused too."""
    from referencing.exceptions import Unresolvable

    started = _SCHEMA_DEADLINE.set(deadline)
    try:
        errors = list(validator.iter_errors(document))
    except Unresolvable as error:  # refused at PUT; a schema stored by an older lazyboss may still have one
        return Invalid(f"{what}: the type's schema refers to {error}, which lazyboss cannot resolve", code)
    except RecursionError:
        return Invalid(f"{what}: the type's schema refers to itself without end (a $ref loop)", code)
    except TimeoutError:
        return Invalid(
            f"{what}: could not be checked against the type's schema within {_SCHEMA_CHECK_SECONDS:g} s "
            "(a pattern or the schema's references take too long for this document)",
            code,
        )
    finally:
        _SCHEMA_DEADLINE.reset(started)
    if not errors:
        return None
    error = _json_schema_package().exceptions.best_match(errors)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Invalid(f"{what} at {error.json_path}: {_shortened(error.message)} (rule {error.validator!r}){more}", code)


@dataclass
class ProgressItem:
    """One event of a worker's progress stream: an id, a name (`log_chunk`, `percent`, …) and data."""

    id: int
    event: str
    data: str

    def view(self) -> dict:
        """The public JSON shape."""
        return {"id": self.id, "event": self.event, "data": self.data}


_SSE_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n|$)")  # a line and its end: text/event-stream knows three
_PROGRESS_EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _lines(text: str) -> list[tuple[str, str]]:
    """The lines of a text, each with the line end that ended it ("" for the last)."""
    lines = []
    for line, end in _SSE_LINE.findall(text):
        lines.append((line, end))
        if not end:
            break
    return lines


def parse_progress(text: str, last_id: int | None) -> list[ProgressItem]:
    """Parse a text/event-stream body into progress items, or raise Invalid.

    An event without an `id:` takes the one after the previous event's (or
    after `last_id`, the request's Last-Event-Id); one without `event:` is a
    `log_chunk`. A `percent` must carry a number from 0 to 100. Unlike
    EventSource, which joins `data:` lines with `\n`, each line is joined to
    the next by the line end that ended it, so a log keeps its `\r` and
    `\r\n` (see `_progress_event`); for a sender ending lines with `\n` that
    is the same thing.
    """
    items: list[ProgressItem] = []
    fields: dict[str, Any] = {}
    data: list[str] = []
    previous = last_id or 0
    for line, end in _lines(text):
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data += [value, end]
            elif name in ("id", "event"):
                fields[name] = value
            if end:
                continue
        if not data and not fields:
            continue
        if "id" in fields:
            previous = _as_id(fields["id"])  # type: ignore[assignment]
            if previous is None:
                raise Invalid(f"progress event id {fields['id']!r} is not a whole number below 10**18")
        else:
            previous += 1
        event = fields.get("event", "log_chunk")
        if not _PROGRESS_EVENT.fullmatch(event):
            raise Invalid(f"progress event name {event!r} is not a word of letters, digits and _.:-")
        item = ProgressItem(previous, event, "".join(data[:-1]))
        if event == "percent":
            try:
                _check_number(float(item.data), "percent", 0, 100)
            except ValueError:
                raise Invalid(f"percent event {item.id} needs a number from 0 to 100, not {item.data!r}") from None
        items.append(item)
        fields, data = {}, []
    return items


def _progress_event(item_id: int, event: str, data: str) -> str:
    """One progress event as `parse_progress` reads it back: `data` exactly, whatever its line ends."""
    lines = "".join("data: " + line + (end or "\n") for line, end in _lines(data))
    return f"id: {item_id}\nevent: {event}\n{lines}\n"


def _progress_size(item_id: int, event: str, data: str) -> int:
    """The length in bytes of `_progress_event(item_id, event, data)`, without building it."""
    line_ends = data.count("\n") + data.count("\r") - data.count("\r\n")
    text = len(data) if data.isascii() else len(data.encode())
    # Each line gains "data: ", the last one its "\n" too; then the header and the blank line.
    return text + 6 * (line_ends + 1) + 1 + len(f"id: {item_id}\nevent: {event}\n\n".encode())


def _sse_message(event_id: int, data: str) -> str:
    """One Server-Sent Event."""
    return f"id: {event_id}\ndata: {data}\n\n"


@dataclass(frozen=True)
class _Event:
    """An event of the log as streams send it: its job's small fields and, of parameters, result and
    error, those it set (JSON texts); and the event as /events sends it (`{id, event, at, job, detail?}`)."""

    id: int
    job_id: int
    type: str
    kind: str
    small: str
    changes: dict[str, str]
    data: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> _Event:
        """From a row of `id, job_id, type, kind, at, detail` and the columns of the engine's `event_job_json`."""
        changes = {field: row[field] for field in _EVENT_CHANGES if row[field] is not None}
        job = _with_members(row["job"], changes)
        detail = "" if row["detail"] is None else f',"detail":{row["detail"]}'
        data = f'{{"id":"{row["id"]}","event":"{row["kind"]}","at":"{rfc3339(row["at"])}","job":{job}{detail}}}'
        return cls(row["id"], row["job_id"], row["type"], row["kind"], row["job"], changes, data)

    def whole_job(self, large: dict[str, str]) -> str:
        """The job whole as it was at this event, from `large`, its parameters, result and error as they
        were before it (JSON texts), which it brings up to date: what a job's stream sends."""
        large.update(self.changes)
        return _with_members(self.small, large)

    @property
    def size(self) -> int:
        """About the bytes it holds."""
        return len(self.small) + sum(map(len, self.changes.values())) + len(self.data)


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------

_INTERVAL = re.compile(r"^\s*(?:every\s+)?(\d+)?\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE | re.ASCII)
_INTERVAL_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


class Cron:
    """A five-field cron line (minute hour day-of-month month day-of-week), read as cron(8) reads it.

    The reference is Vixie cron and cronie, as modelled by cronsim (which the
    tests compare with): when either day field starts with `*` (as `*/2`
    does) a day must match both, otherwise either. A line with a fixed minute
    and hour walks the wall clock through daylight-saving changes: it fires
    once in a repeated hour, and a time a jump skips fires right after the
    jump. Every other line walks real time: `*/15 * * * *` fires every 15
    minutes through a repeated hour, and not for the minutes a jump skips.
    """

    FIELDS = (("minute", 0, 59, []), ("hour", 0, 23, []), ("day of month", 1, 31, []))
    FIELDS += (("month", 1, 12, _MONTH_NAMES), ("day of week", 0, 7, _DAY_NAMES))
    HORIZON_YEARS = 50  # a line that does not fire within this many years never does (as cronsim)

    def __init__(self, line: str):
        parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"{line!r} is neither an interval such as '10 minutes' nor a five-field cron line")
        sets = [self._parse_field(part, *field) for part, field in zip(parts, self.FIELDS)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {day % 7 for day in weekdays}  # 7 is Sunday too
        self.both_days = parts[2].startswith("*") or parts[4].startswith("*")
        self.wall_clock = not parts[0].startswith("*") and not parts[1].startswith("*")

    @staticmethod
    def _parse_field(text: str, name: str, low: int, high: int, names: list[str]) -> set[int]:
        """The values a field allows: lists, ranges, steps, `*` and names."""

        def number(word: str) -> int:
            if word.lower() in names:
                return names.index(word.lower()) + (1 if name == "month" else 0)
            if not re.fullmatch("[0-9]{1,4}", word) or not low <= int(word) <= high:
                raise ValueError(f"{name}: {word!r} is not a number from {low} to {high}")
            return int(word)

        values: set[int] = set()
        for item in text.split(","):
            span, _, step_text = item.partition("/")
            if step_text and (not re.fullmatch("[0-9]{1,9}", step_text) or int(step_text) == 0):
                raise ValueError(f"{name}: step {step_text!r} is not a positive whole number")
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                first, last = (number(word) for word in span.split("-", 1))
            else:
                first = number(span)
                last = high if step_text else first
            if first > last:
                raise ValueError(f"{name}: range {span!r} runs backwards")
            values.update(range(first, last + 1, step))
        return values

    def _day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        return (in_month and in_week) if self.both_days else (in_month or in_week)

    def next_after(self, timestamp: float, zone: Any) -> float:
        """The first time after `timestamp` the line fires in `zone`."""
        if self.wall_clock:
            moment = datetime.fromtimestamp(timestamp, zone).replace(tzinfo=None, second=0, microsecond=0)
            moment += timedelta(minutes=1)
        else:
            moment = datetime.fromtimestamp((math.floor(timestamp / 60) + 1) * 60, zone)
        horizon = moment.year + self.HORIZON_YEARS
        while True:
            moment = self._first_match(moment, zone, horizon)
            if self.wall_clock:
                # A wall time that a jump skips fires at the first minute after the
                # jump; one that a fall-back repeats, at its first pass.
                while not self._wall_time_exists(moment, zone):
                    moment += timedelta(minutes=1)
                fires = moment.replace(tzinfo=zone, fold=0).timestamp()
            else:
                fires = moment.timestamp()
            if fires > timestamp:  # else a fixed time whose first pass is over, in a repeated hour
                return fires
            moment = self._forward(moment, zone, 60)

    @staticmethod
    def _wall_time_exists(moment: datetime, zone: Any) -> bool:
        """Whether a wall-clock time happens in `zone` (a jump forward skips some)."""
        return moment.replace(tzinfo=zone).astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) == moment

    def _forward(self, moment: datetime, zone: Any, seconds: int) -> datetime:
        """`seconds` later: on the wall clock for a fixed-time line, in real time for the others."""
        if self.wall_clock:
            return moment + timedelta(seconds=seconds)
        return (moment.astimezone(timezone.utc) + timedelta(seconds=seconds)).astimezone(zone)

    def _first_match(self, moment: datetime, zone: Any, horizon: int) -> datetime:
        """The first matching minute from `moment` on; ValueError past the year `horizon`."""
        while True:
            if moment.month not in self.months:
                day = moment.date().replace(day=1)
                while day.month not in self.months:
                    day = (day + timedelta(days=32)).replace(day=1)
                moment = datetime.combine(day, datetime.min.time(), moment.tzinfo)
            if moment.year > horizon:
                raise ValueError("the cron line never fires (such as on the 30th of February)")
            if not self._day_matches(moment.date()):
                day = moment.date() + timedelta(days=1)
                while not self._day_matches(day) and day.day != 1:  # a new month is checked above
                    day += timedelta(days=1)
                moment = datetime.combine(day, datetime.min.time(), moment.tzinfo)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0)
                while True:
                    moment = self._forward(moment, zone, 3600)
                    if moment.hour in self.hours or moment.hour == 0:
                        break
            elif moment.minute not in self.minutes:
                if len(self.minutes) == 1:
                    (target,) = self.minutes
                    moment = self._forward(moment, zone, (target - moment.minute) % 60 * 60)
                while moment.minute not in self.minutes:
                    moment = self._forward(moment, zone, 60)
                    if moment.minute == 0:
                        break
            else:
                return moment


@dataclass
class Every:
    """When a schedule fires: a fixed interval counted from the Unix epoch, or a cron line in a zone."""

    text: str
    zone_name: str
    period: float | None = None
    cron: Cron | None = None

    def next_after(self, timestamp: float) -> float:
        """The first tick after `timestamp` (ValueError when a cron line's zone is unknown here)."""
        if self.period is not None:
            return (math.floor(timestamp / self.period) + 1) * self.period
        assert self.cron is not None
        return self.cron.next_after(timestamp, _time_zone(self.zone_name))


def _time_zone(name: str) -> Any:
    """The time zone of this name: UTC without any database, others from the system's time zone
    database (or the `tzdata` package); ValueError for a name unknown here."""
    if name == "UTC":
        return timezone.utc
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if zoneinfo.available_timezones():
            raise ValueError(f"unknown time zone {name!r}") from None
        raise ValueError(
            f"unknown time zone {name!r}: this host has no time zone database "
            "(install it: apt install tzdata, or pip install 'lazyboss[tzdata]')"
        ) from None


def parse_every(text: Any, zone_name: Any = "UTC", check_zone: bool = True) -> Every:
    """A schedule's `every`: `"30 seconds"`, `"2 hours"`, `"1 day"`, or a cron line; ValueError says what is wrong.

    An interval counts from the Unix epoch: only a cron line needs its zone.
    `check_zone=False` reads a stored interval without looking its zone up.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'every' must be a string such as '10 minutes' or '*/5 * * * *'")
    if not isinstance(zone_name, str):
        raise ValueError("'timezone' must be a name such as 'Europe/Berlin'")
    if check_zone:
        _time_zone(zone_name)
    match = _INTERVAL.match(text)
    if match:
        count = int(match.group(1) or 1)
        period = count * _INTERVAL_SECONDS[match.group(2).lower()]
        if count == 0 or period > _LONGEST_DURATION:
            raise ValueError(f"{text!r}: an interval is from 1 second to 100 years")
        return Every(text.strip(), zone_name, period=period)
    every = Every(text.strip(), zone_name, cron=Cron(text))
    every.next_after(0)  # refuse a line that never fires
    return every


# --------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------


class _Signal:
    """A generation counter threads can wait on: `fire` bumps it and wakes every waiter."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.generation = 0

    def fire(self) -> None:
        """Wake everybody waiting for a change."""
        with self._condition:
            self.generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until the generation differs from `seen` (or timeout); return it."""
        with self._condition:
            self._condition.wait_for(lambda: self.generation != seen, timeout)
            return self.generation


_TOKEN_USE_RESOLUTION = 60.0  # `last_used_at` is written at most once a minute per token


def _token_hash(secret: str) -> str:
    """What is stored of a secret. SHA-256 suffices: secrets are random, not passwords."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _resolve(settings: sqlite3.Row | None, column: str, default: Any) -> Any:
    """A type's setting, else the default."""
    if settings is not None and settings[column] is not None:
        return settings[column]
    return default


def _type_view(name: str, row: sqlite3.Row | None, counts: dict[str, int]) -> dict:
    """A job type's public shape: effective settings, its own (`settings`: those not left at their
    default, as PUT takes them), and counts."""
    own = _own_settings(row)
    return {
        "type": name,
        "timeout": _resolve(row, "timeout", _DEFAULT_TIMEOUT),
        "max_attempts": _resolve(row, "max_attempts", _DEFAULT_MAX_ATTEMPTS),
        "backoff": {
            "base": _resolve(row, "backoff_base", _DEFAULT_BACKOFF_BASE),
            "max": _resolve(row, "backoff_max", _DEFAULT_BACKOFF_MAX),
        },
        "paused": own.get("paused", False),
        "retain": own.get("retain"),
        "parameters_schema": own.get("parameters_schema"),
        "result_schema": own.get("result_schema"),
        "labels": own.get("labels", {}),
        "claim_window": own.get("claim_window"),
        "concurrency": own.get("concurrency"),
        "configured": row is not None,
        "settings": own,
        "jobs": {status: counts.get(status, 0) for status in JOB_STATUSES},
    }


# Which events the metrics count, under which name.
_EVENT_COUNTERS = {
    "submitted": "jobs_submitted",
    "claimed": "jobs_claimed",
    "done": "jobs_completed",
    "failed": "jobs_failed",
    "cancelled": "jobs_cancelled",
    "retried": "jobs_retried",
    "unheld": "jobs_released",
    "released": "claims_released",
}


# The application id (PRAGMA application_id, in the file's header) that marks a lazyboss database, and
# the tables every lazyboss database has held since its first schema (files from before the mark).
_APPLICATION_ID = 0x6C7A6273  # "lzbs"
_LAZYBOSS_TABLES = {"jobs", "attempts", "events"}


def _check_schema_version(version: int, latest: int = len(_MIGRATIONS)) -> None:
    """Refuse a database whose schema a later release wrote: this one would misread it."""
    if version > latest:
        raise StorageError(
            f"its schema is version {version}, newer than lazyboss {__version__} knows (version "
            f"{latest}): run a newer lazyboss",
            "schema_too_new",
        )


def _file_uri(path: str, mode: str) -> str:
    """SQLite's URI for a file opened in `mode` (ro, rw, rwc): the path's bytes as the file system has them.
    Every connection opens its file this way: a path given as it is would be read as a URI by a SQLite built
    to (`file:jobs.sqlite` opened jobs.sqlite, `:memory:` no file at all) by the first connection only."""
    return f"file:{urllib.parse.quote(os.fsencode(os.path.abspath(path)))}?mode={mode}"


def _refuse_unfit_file(path: str) -> None:
    """Raise StorageError, before anything writes to it, if lazyboss must not use the file at `path`:
    one this user may not write, not SQLite, damaged, another program's database, or a newer schema.

    SQLite would open a file it may not write read-only without a word (and make a WAL and shared
    memory as read-only as the file); the rest would fail half-way, or put lazyboss's tables into
    another program's file. Nothing is created here: the file is read through a read-only connection.
    """
    read_only_file_system = os.path.exists(path) and os.statvfs(path).f_flag & os.ST_RDONLY
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if not read_only_file_system and os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK):
            status = os.stat(name)
            raise StorageError(
                f"{'the file' if name == path else name} (mode {stat.filemode(status.st_mode)}, owner uid "
                f"{status.st_uid}) may not be read and written by uid {os.geteuid()}, which lazyboss runs as: "
                "give it the file (chown, chmod u+rw)",
                "permission_denied",
            )
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return  # a new database, made by opening it
    try:
        with closing(sqlite3.connect(_file_uri(path, "ro"), uri=True, isolation_level=None)) as db:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    except sqlite3.Error as error:
        failure = _storage_error(error)
        if failure is None or failure.code in ("cannot_open", "io_error", "database_busy"):
            return  # opening it says why, with what the file system tells
        raise failure from None
    if application_id not in (0, _APPLICATION_ID):
        owner = f"its application id is {application_id:#010x}"
    elif application_id == 0 and (version == 0 and tables or version > 0 and not _LAZYBOSS_TABLES <= set(tables)):
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        owner = f"its tables are {shown}"
    else:
        _check_schema_version(version)
        return
    raise StorageError(
        f"it is another program's SQLite database ({owner}), not lazyboss's: give lazyboss a file of its own",
        "foreign_database",
    )


def _checkpoint_marks(shared_memory: int | None) -> tuple[bytes, bytes] | None:
    """How far checkpoints of a database went, read from the WAL index in its shared memory file (a
    descriptor open for reading): (the WAL's salts and the frames backfilled, the frames the last
    checkpoint began to backfill); None without one.

    A checkpoint sets the second before it writes into the database file and the first once done;
    the salts change when the WAL starts over. So the database file changes while the marks stand
    still, and equal, only when something other than SQLite wrote it. (Layout: the WalIndexHdr and
    WalCkptInfo structs of SQLite's wal.c, in the machine's byte order.)
    """
    if shared_memory is None:
        return None
    try:
        index = os.pread(shared_memory, 136, 0)
    except OSError:
        return None
    if len(index) < 136:
        return None
    return index[32:40] + index[96:100], index[128:132]


def _remove_empty_wal(path: str, made: list[str]) -> None:
    """Remove the WAL and shared memory that opening a file lazyboss could not use made, if its WAL
    holds nothing (SQLite leaves them when the file turns out damaged): it leaves no files behind."""
    with suppress(OSError):
        if made and os.path.getsize(f"{path}-wal") == 0:
            for name in made:
                os.unlink(name)


def _why_unopenable(path: str) -> str | None:
    """Why SQLite cannot open a database at `path`, as far as the file system tells (None: it does not)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{path} is a directory"
    try:
        if not os.path.isdir(os.path.realpath(folder)):
            os.stat(folder)  # says why: missing, not reachable
            return f"{folder} is not a directory"
        file_system = os.statvfs(folder)
    except FileNotFoundError:
        return f"the directory {folder} does not exist"
    except OSError as error:
        return f"cannot reach the directory {folder}: {error.strerror}"
    if file_system.f_flag & os.ST_RDONLY:
        return f"the directory {folder} is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"lazyboss may not create files in the directory {folder}"
    if file_system.f_bavail == 0:
        return f"the disk holding {folder} is full"
    return None


# File systems shared over a network: SQLite's WAL needs memory shared by every user of the file, and
# locks that hold, which only a local disk gives (https://www.sqlite.org/wal.html, "Disadvantages").
# (Not 9p: sandboxes such as gVisor serve their own local root file system over it.)
_NETWORK_FILE_SYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ceph", "glusterfs", "fuse.glusterfs",
    "fuse.sshfs", "sshfs", "lustre", "gpfs", "ocfs2", "gfs2", "davfs", "fuse.s3fs", "fuse.rclone",
}  # fmt: skip


def _file_system_type(path: str, mount_table: str = "/proc/self/mounts") -> str | None:
    """The type of the file system holding `path`, from Linux's mount table (None where there is none)."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    longest, kind = "", None
    try:
        with open(mount_table, encoding="utf-8", errors="replace") as table:
            for line in table:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), fields[1])
                inside = folder == point or folder.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(longest):
                    longest, kind = point, fields[2]
    except OSError:
        return None
    return kind


# The most writes one group commit takes: the first of them waits for no more than these.
_GROUP_LIMIT = 64


class _Group:
    """Writes that share one SQLite transaction, and so one commit: each is answered once it ended."""

    def __init__(self) -> None:
        self.size = 0  # writes done in it so far
        self._ended = threading.Event()
        self._failure: BaseException | None = None

    def end(self, failure: BaseException | None) -> None:
        """Committed (no failure), or rolled back because of `failure`: release the writers."""
        self._failure = failure
        self._ended.set()

    def wait(self) -> None:
        """Wait until the group ended; raise why it was rolled back, if it was (a StorageError afresh for each)."""
        self._ended.wait()
        failure = self._failure
        if isinstance(failure, LazybossError):
            raise type(failure)(failure.detail, failure.code)
        if failure is not None:
            raise failure


@dataclass
class _Claim:
    """A job handed to a worker: its id, its new attempt's id, and the job as the worker gets it (JSON text)."""

    job: str
    attempt: str
    view: str

    @property
    def location(self) -> str:
        """The attempt's path, where its worker reports."""
        return f"/jobs/{self.job}/attempts/{self.attempt}"


class _SQLiteEngine(_SQLiteSQL):
    """What only SQLite does for the store: its SQL (`_SQLiteSQL`), how a connection is opened and set
    up (WAL mode, the sync level, foreign keys), how a write transaction begins, where the schema's
    version and the file's mark live, and folding the WAL back into the file. The Store reaches SQLite's
    own statements only through this object; `_PostgresEngine` is its twin (see "The PostgreSQL road"
    in the README).
    """

    name = "sqlite"
    begin_snapshot = "BEGIN"  # a read transaction sees the file as its first read does
    # One file that lazyboss guards (see `Store.check_file`), written by one connection whose writes
    # share commits (see `Store.transaction`).
    keeps_a_file = True
    migrations = _MIGRATIONS
    errors: Any = sqlite3.Error

    def __init__(self, path: str, sync: str = "full"):
        if sync not in ("full", "normal"):
            raise ValueError("sync must be 'full' or 'normal'")
        super().__init__()
        self.path = path
        self.sync = sync

    def __str__(self) -> str:
        return self.path

    def connect(self, address: str, uri: bool = False) -> sqlite3.Connection:
        """A new connection, set up as all of the store's are. An address that is not a URI is a file's name
        (made if missing), whatever it looks like (see `_file_uri`)."""
        if not uri:
            address, uri = _file_uri(address, "rwc"), True
        conn = sqlite3.connect(address, uri=uri, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            # After a checkpoint, cut a WAL that grew past this back down.
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    @staticmethod
    def prepare_writer(conn: sqlite3.Connection) -> None:
        """Set up the connection every write goes through."""
        conn.execute("PRAGMA temp_store = MEMORY")  # savepoints keep what they may undo in memory, not a file

    @staticmethod
    def wait_within(db: sqlite3.Connection) -> None:
        """Nothing: an SQLite transaction may wait between statements as long as it likes."""

    @staticmethod
    def read_in_batches(db: sqlite3.Connection, sql: str) -> sqlite3.Cursor:
        """A cursor whose rows are read from the file as they are fetched."""
        return db.execute(sql)

    @staticmethod
    def usable(conn: sqlite3.Connection) -> bool:
        """Whether a connection still serves (a file's always does)."""
        return True

    @staticmethod
    def begin(db: sqlite3.Connection) -> None:
        """Begin a group's transaction, taking the file's write lock at once: nothing a write reads can
        change before it commits."""
        db.execute("BEGIN IMMEDIATE")

    @staticmethod
    def commit(db: sqlite3.Connection) -> None:
        """Commit a group's transaction (events are numbered as they are inserted, by AUTOINCREMENT)."""
        db.execute("COMMIT")

    @staticmethod
    def storage_error(error: Exception) -> StorageError | None:
        """What an error of this engine says about the database, if anything (else it is a bug)."""
        return _storage_error(error)

    @staticmethod
    def apply(db: sqlite3.Connection, migration: Any) -> None:
        """Run one migration in the running transaction."""
        if callable(migration):
            migration(db)
        else:
            for statement in _sql_statements(migration):
                db.execute(statement)

    def listen(self, signals: dict[str, _Signal]) -> None:
        """Nothing: the processes on one file see each other's writes by looking (see `_EventFeed`)."""

    def close(self) -> None:
        """Nothing: the store closes its connections."""

    @staticmethod
    def last_ids(db: sqlite3.Connection) -> dict[str, int]:
        """The last id ever given to a job, an event and a submission (AUTOINCREMENT's, for the first two)."""
        given = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        return {table: int(given.get(table, 0)) for table in ("jobs", "events", "submissions")}

    @staticmethod
    def continue_ids(db: sqlite3.Connection, last: dict[str, int]) -> None:
        """Give ids after `last` (by table) from now on, in the running transaction."""
        for table in ("jobs", "events"):  # AUTOINCREMENT's; a submission's id is the next after the highest
            db.execute("DELETE FROM sqlite_sequence WHERE name = ? AND seq < ?", (table, last[table]))
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                (table, last[table], table),
            )

    def disk_free(self) -> int | None:
        """Bytes free for lazyboss on the file system holding the database (None if it cannot be told)."""
        try:
            file_system = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return None
        return file_system.f_bavail * file_system.f_frsize

    def file_sizes(self) -> dict[str, int]:
        """Bytes on disk of the database file and its WAL."""
        sizes = {}
        for name, path in (("database", self.path), ("wal", self.path + "-wal")):
            try:
                sizes[name] = os.path.getsize(path)
            except OSError:
                sizes[name] = 0
        return sizes

    @staticmethod
    def schema_version(db: sqlite3.Connection) -> int:
        """The number of migrations the database has had."""
        return int(db.execute("PRAGMA user_version").fetchone()[0])

    @staticmethod
    def set_schema_version(db: sqlite3.Connection, version: int) -> None:
        """Note the migrations had, in the running transaction (written even when it is the same number)."""
        db.execute(f"PRAGMA user_version = {int(version)}")

    @staticmethod
    def prepare_new(writer: sqlite3.Connection) -> None:
        """Before the first table: let the reaper give freed pages back (only possible on an empty file)."""
        writer.execute("PRAGMA auto_vacuum = INCREMENTAL")

    @staticmethod
    def mark_as_ours(db: sqlite3.Connection) -> None:
        """Mark the database as lazyboss's (SQLite's application id), in the running transaction."""
        if db.execute("PRAGMA application_id").fetchone()[0] != _APPLICATION_ID:
            db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")

    @staticmethod
    def checkpoint(db: sqlite3.Connection) -> bool:
        """Fold the WAL into the file, truncate it, give free pages back; False if readers held it."""
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        db.execute("PRAGMA incremental_vacuum").fetchall()
        return not busy


# What `Store.copy_into` copies, parents first (job counts and claim keys are rebuilt by triggers).
_COPIED_TABLES = (
    "submissions",
    "jobs",
    "attempts",
    "progress",
    "events",
    "types",
    "type_versions",
    "tokens",
    "sessions",
    "workers",
    "schedules",
)
_EVENT_CHANNELS = ("lazyboss_queue", "lazyboss_events")  # NOTIFY channels: a job may be claimable; the log grew
_WRITE_LOCK = 0x6C7A6273  # pg_advisory_xact_lock key: one write at a time across replicas (migrations too)


@functools.lru_cache(maxsize=1024)
def _format_placeholders(sql: str) -> str:
    """The store's SQL (`?` placeholders) as psycopg takes it (`%s`, and a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresRow(tuple):
    """A row read by position or by column name, as sqlite3.Row is."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self.names)


@functools.lru_cache(maxsize=256)
def _postgres_row_type(names: tuple[str, ...]) -> type[_PostgresRow]:
    """The `_PostgresRow` class of rows with these columns: made once (a class costs more than its rows)."""
    return type("_PostgresRow", (_PostgresRow,), {"names": names, "__slots__": ()})


def _postgres_rows(cursor: Any) -> Callable[[Any], _PostgresRow]:
    """psycopg's row factory for `_PostgresRow`s of the cursor's columns."""
    return _postgres_row_type(tuple(column.name for column in cursor.description or ()))


class _PostgresConnection:
    """A psycopg connection that the store uses as it uses its sqlite3 ones: `execute` with `?`
    placeholders on the connection, rows by position or name, explicit BEGIN and COMMIT, `in_transaction`.
    `generation` is its engine's when it was opened (see `_PostgresEngine.usable`)."""

    def __init__(self, conn: Any, generation: int = 0):
        self._conn = conn
        self.generation = generation

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        """Run one statement (or, without parameters, a script); its cursor."""
        if not parameters:  # psycopg reads no placeholders then, nor a doubled `%`
            return self._conn.execute(sql)
        return self._conn.execute(_format_placeholders(sql), parameters)

    def last_row(self, script: str) -> Any:
        """Run a script (statements without parameters, sent in one round trip); the first row of its last
        statement's result."""
        cursor = self.execute(script)
        while cursor.nextset():
            pass
        return cursor.fetchone()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (BEGIN given, no COMMIT or ROLLBACK yet)."""
        return self._conn.info.transaction_status != self._conn.info.transaction_status.IDLE

    def server_cursor(self, sql: str) -> Any:
        """Run a query (without parameters) on a cursor of the server's, in the running transaction (one at a
        time: close it before the next)."""
        cursor = self._conn.cursor(name="lazyboss_rows")
        cursor.execute(sql)
        return cursor

    @property
    def failed(self) -> bool:
        """Whether its transaction failed and waits for a ROLLBACK."""
        return self._conn.info.transaction_status == self._conn.info.transaction_status.INERROR

    def executemany(self, sql: str, rows: Any) -> None:
        """Run one statement for each row of parameters."""
        with self._conn.cursor() as cursor:
            cursor.executemany(_format_placeholders(sql), list(rows))

    @property
    def closed(self) -> bool:
        """Whether the connection ended (closed, or lost)."""
        return bool(self._conn.closed)

    def notifies(self, timeout: float) -> Iterator[Any]:
        """NOTIFY messages as they arrive, for at most `timeout` seconds."""
        return self._conn.notifies(timeout=timeout)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


@functools.lru_cache(maxsize=1)
def _nul_free_dumper() -> Any:
    """psycopg's dumper of text parameters, writing U+FFFD for a NUL character: PostgreSQL's text cannot
    hold one (SQLite's can), and a worker's output may (binary output in a progress event's data)."""
    import psycopg

    class NulFreeDumper(psycopg.types.string.StrDumperUnknown):  # type: ignore[misc, name-defined]
        def dump(self, obj: str) -> Any:
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    return NulFreeDumper


class _PostgresEngine(_PostgresSQL):
    """What only PostgreSQL does for the store: the twin of `_SQLiteEngine`, plus what replicas need:
    writes one at a time across every replica, event ids numbered in commit order, NOTIFY for the
    wake-ups of other replicas, and a connection lost then tried again with back-off."""

    name = "postgresql"
    # One answer's reads see the database as their first one does.
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    keeps_a_file = False  # the server keeps its files: no file of lazyboss's to guard
    migrations = _POSTGRES_MIGRATIONS
    _RETRY_FIRST, _RETRY_MOST = 0.5, 30.0  # seconds between attempts to connect, doubling while none succeeds
    # Set on each connection unless the server (role, database, the URL's options) sets them already. A
    # replica frozen or cut off inside a write would hold the write lock until TCP gives up on it (hours):
    # the server ends such a transaction (never acknowledged: its COMMIT fails), and a write waits for the
    # lock no longer than SQLite's busy timeout.
    SESSION_SETTINGS = {"idle_in_transaction_session_timeout": "15s", "lock_timeout": "30s"}

    _VERSION = "SELECT version FROM lazyboss_schema"

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self._stopping = threading.Event()
        self._retry_lock = threading.Lock()
        self._retry_at = 0.0  # no connection is attempted before (monotonic): the back-off after a failure
        self._retry_pause = 0.0
        # Bumped when the server dropped connections (it restarted): each is opened anew before its next use,
        # rather than failing one request to learn it is dead.
        self.generation = 0
        self._outage_logged = False  # the listener's lost connection is logged once until it listens again
        self.migrated = False  # set by `Store.migrate`: from then on each write checks the schema is still ours

    def __str__(self) -> str:
        """The URL without its password (a URL is logged, its password never)."""
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.netloc if parts.password is None else parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        query = "&".join("password=***" if _is_password_parameter(piece) else piece for piece in parts.query.split("&"))
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))

    def _told(self, error: Exception) -> str:
        """What PostgreSQL (or libpq) said, on one line, with any password of the URL masked."""
        diagnostic = getattr(error, "diag", None)
        text = (diagnostic.message_primary if diagnostic is not None else None) or str(error)
        text = " ".join(text.split())
        parts = urllib.parse.urlsplit(self.url)
        given = [parts.password or ""] + [
            piece.partition("=")[2] for piece in parts.query.split("&") if _is_password_parameter(piece)
        ]
        secrets = {spelling for secret in given for spelling in (secret, urllib.parse.unquote(secret)) if spelling}
        for secret in sorted(secrets, key=len, reverse=True):  # a longer spelling first: no part of it left
            text = text.replace(secret, "***")
        return text[:500]

    @property
    def errors(self) -> Any:
        """The base class of psycopg's errors."""
        import psycopg

        return psycopg.Error

    def connect(self, address: str | None = None, uri: bool = False) -> _PostgresConnection:
        """A new connection in autocommit mode (the store sends BEGIN and COMMIT itself). While the server
        cannot be reached, attempts are spaced by a back-off (StorageError at once in between)."""
        try:
            import psycopg
        except ImportError:
            raise StorageError(f"PostgreSQL needs psycopg: pip install '{_POSTGRES_EXTRA}'", "cannot_open") from None
        with self._retry_lock:
            if time.monotonic() < self._retry_at:
                raise StorageError("cannot connect to PostgreSQL (trying again shortly)", "database_unavailable")
        generation = self.generation
        try:
            conn = psycopg.connect(address or self.url, autocommit=True, row_factory=_postgres_rows, connect_timeout=10)
            try:
                conn.execute(
                    "SELECT set_config(name, setting, false) FROM (VALUES "
                    + ", ".join(["(%s, %s)"] * len(self.SESSION_SETTINGS))
                    + ") AS wanted (name, setting) WHERE current_setting(name) IN ('0', '')",
                    [value for pair in self.SESSION_SETTINGS.items() for value in pair],
                )
                # No JIT: lazyboss's statements run in about a millisecond, but one estimated over
                # jit_above_cost is compiled first, under the write lock: a claim naming 200 types (a union of
                # one query per type) took 75 s, one naming 500 over a minute.
                conn.execute("SET jit = off")
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as error:
            with self._retry_lock:
                self._retry_pause = min(max(self._retry_pause * 2, self._RETRY_FIRST), self._RETRY_MOST)
                self._retry_at = time.monotonic() + self._retry_pause
            raise StorageError(f"cannot connect to PostgreSQL: {self._told(error)}", "database_unavailable") from None
        with self._retry_lock:
            self._retry_pause, self._retry_at = 0.0, 0.0
        # json values (a job, built by the server) are read as the text they are, as SQLite gives them.
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, psycopg.types.string.TextLoader)
        conn.adapters.register_dumper(str, _nul_free_dumper())
        return _PostgresConnection(conn, generation)

    def usable(self, conn: _PostgresConnection) -> bool:
        """Whether a connection still serves: one the server dropped, or opened before the server was seen
        dropping connections, is opened anew (but never in the middle of its transaction), and so is one
        left in a failed transaction (a write whose BEGIN failed: the lock's wait timed out)."""
        if conn.closed or conn.failed:
            return False
        return conn.generation == self.generation or conn.in_transaction

    @staticmethod
    def prepare_writer(conn: _PostgresConnection) -> None:
        """Nothing: the connection every write of this replica goes through is set up as any."""

    def storage_error(self, error: Exception) -> StorageError | None:
        """What an error says about the database, as StorageError (503) with PostgreSQL's own words; None
        for a bug of lazyboss's."""
        import psycopg

        state = getattr(error, "sqlstate", None) or ""
        if state == "55P03":  # lock_timeout: the write lock was held too long by another writer
            return StorageError(
                f"another writer held the database's write lock too long: nothing was written ({self._told(error)})",
                "database_busy",
            )
        if state == "42501":
            return StorageError(
                f"the PostgreSQL user may not do what lazyboss needs: {self._told(error)}", "permission_denied"
            )
        # The server ended the session: it was idle inside a transaction (a replica frozen in a write) or idle.
        ended = state in ("25P03", "57P05")
        if isinstance(error, psycopg.OperationalError) or ended:
            if ended or not state or state.startswith("08") or state in ("57P01", "57P02", "57P03"):
                self.server_dropped_connections()
            return StorageError(f"PostgreSQL: {self._told(error)}", "database_unavailable")
        return None

    def server_dropped_connections(self) -> None:
        """The server ended a connection (it restarted, or was cut off): open every one anew before its next use."""
        self.generation += 1

    def begin(self, db: _PostgresConnection) -> None:
        """Begin a group's transaction: one at a time across every replica, as SQLite's BEGIN IMMEDIATE
        makes them on one file.

        The lock is taken first, before anything is read: what a write decides
        on cannot change before it commits, as on SQLite, and so every rule of
        the store holds across replicas (a job claimed, expired or reported once).
        Once the schema is this release's, its version is read under the lock in
        the same round trip: a newer replica may have migrated the database since,
        and this one's statements would misread it (503 `schema_too_new`).
        """
        if not self.migrated:
            db.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            return
        (version,) = db.last_row(f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK}); {self._VERSION}")
        _check_schema_version(int(version), len(self.migrations))

    @staticmethod
    def schema_version(db: _PostgresConnection) -> int:
        """The number of migrations the database has had (0: none, not even the version's table)."""
        if db.execute("SELECT to_regclass('lazyboss_schema')").fetchone()[0] is None:
            return 0
        return int(db.execute(_PostgresEngine._VERSION).fetchone()[0])

    @staticmethod
    def wait_within(db: _PostgresConnection) -> None:
        """Let the running transaction wait between its statements as long as it must (a copy's, while the
        other database reads or writes): not ended by `idle_in_transaction_session_timeout`."""
        db.execute("SET LOCAL idle_in_transaction_session_timeout = 0")

    @staticmethod
    def read_in_batches(db: _PostgresConnection, sql: str) -> Any:
        """A server-side cursor, in the running transaction: rows come as they are fetched (psycopg's own
        cursor reads a whole table into memory first: 1 GB to copy 486 MB of logs out)."""
        return db.server_cursor(sql)

    def holds_lazyboss(self) -> bool:
        """Whether the database has lazyboss's tables: a look on a connection of its own, making none."""
        conn = self.connect()
        try:
            return self.schema_version(conn) > 0
        finally:
            conn.close()

    @staticmethod
    def set_schema_version(db: _PostgresConnection, version: int) -> None:
        """Note the migrations had, in the running transaction. Once the table is there, an UPDATE: a user
        that may write lazyboss's tables but create none (its owner migrated them) proves writes with it."""
        if db.execute("SELECT to_regclass('lazyboss_schema')").fetchone()[0] is None:
            db.execute("CREATE TABLE lazyboss_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO lazyboss_schema (version) VALUES (0)")
        db.execute("UPDATE lazyboss_schema SET version = ?", (version,))

    @classmethod
    def mark_as_ours(cls, db: _PostgresConnection) -> None:
        """Refuse a database whose schema holds another program's tables, before lazyboss makes its own
        there (lazyboss's tables are its mark: `lazyboss_schema`)."""
        if cls.schema_version(db) > 0:
            return
        tables = [row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        if tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StorageError(
                f"it holds another program's tables ({shown}), not lazyboss's: give lazyboss a database of its own",
                "foreign_database",
            )

    @staticmethod
    def apply(db: _PostgresConnection, migration: str) -> None:
        """Run one migration (a script, sent whole) in the running transaction."""
        db.execute(migration)

    @staticmethod
    def checkpoint(db: _PostgresConnection) -> bool:
        """Nothing: the server checkpoints its own WAL."""
        return True

    @staticmethod
    def last_ids(db: _PostgresConnection) -> dict[str, int]:
        """The last id ever given to a job, an event and a submission."""
        last = {"events": db.execute("SELECT last FROM event_counter").fetchone()[0]}
        for table in ("jobs", "submissions"):
            row = db.execute(f"SELECT last_value, is_called FROM {table}_id_seq").fetchone()
            last[table] = row[0] if row[1] else 0
        return last

    @staticmethod
    def continue_ids(db: _PostgresConnection, last: dict[str, int]) -> None:
        """Give ids after `last` (by table) from now on, in the running transaction."""
        for table in ("jobs", "submissions"):
            db.execute(f"SELECT setval('{table}_id_seq', GREATEST(?, 1), ? > 0)", (last[table], last[table]))
        db.execute("UPDATE event_counter SET last = GREATEST(last, ?)", (last["events"],))

    @staticmethod
    def disk_free() -> None:
        """Not told: the server's disk is its own."""
        return None

    @staticmethod
    def file_sizes() -> dict[str, int]:
        """None: the server's files are its own."""
        return {}

    def commit(self, db: _PostgresConnection) -> None:
        """Number the group's events in commit order, tell every replica (once it commits) and commit, in
        two round trips made while the write lock is held.

        The first also reads the transaction's id, if it has one (it wrote
        something): a connection lost while the COMMIT was under way leaves
        its fate unknown, since PostgreSQL may have committed before the answer
        was lost. A new connection asks (`txid_status`), and a group committed
        after all is acknowledged: refusing it would make a client that retries
        submit its job twice. One that was not, or whose fate stays unknown,
        fails with the error the COMMIT met. (Reading the id at BEGIN would
        give one to every transaction, with a commit record and a WAL flush
        even for a claim that found nothing: four a second on an idle server
        with three waiting workers.)

        The counter row stays locked until the commit: a concurrent writer
        numbers its own only once this one is committed and visible, so every
        id a follower sees is below every id committed after it, and no id is
        skipped or used twice (ids are never reused: retention deletes events,
        not the counter). The counter is taken (and its row locked), and the
        replicas told, only by a transaction with events.
        """
        channels = ", ".join(f"'{channel}'" for channel in _EVENT_CHANNELS)
        script = f"""WITH fresh AS (SELECT seq, row_number() OVER (ORDER BY seq) AS nth, count(*) OVER () AS total
                               FROM events WHERE id IS NULL),
                 counter AS (UPDATE event_counter SET last = last + (SELECT count(*) FROM fresh)
                             WHERE EXISTS (SELECT 1 FROM fresh) RETURNING last),
                 numbered AS (UPDATE events SET id = counter.last - fresh.total + fresh.nth FROM fresh, counter
                              WHERE events.seq = fresh.seq RETURNING 1)
                SELECT pg_notify(channel, '') FROM unnest(ARRAY[{channels}]) AS channel
                WHERE EXISTS (SELECT 1 FROM numbered);
                SELECT txid_current_if_assigned()"""
        (transaction_id,) = db.last_row(script)
        try:
            db.execute("COMMIT")
        except self.errors:
            if not db.closed or transaction_id is None or not self._committed_after_all(transaction_id):
                raise
            _log.warning("the connection was lost while committing; PostgreSQL says the commit was made")

    def _committed_after_all(self, transaction_id: int) -> bool:
        """Whether a transaction whose COMMIT's answer was lost was committed, asked on a new connection.
        For a few seconds: PostgreSQL may be restarting (connections refused meanwhile), or not yet have
        seen the old connection end (the transaction still in progress). Unknown after them is False."""
        deadline = time.monotonic() + 5
        while True:
            try:
                conn = self.connect()
                try:
                    (status,) = conn.execute("SELECT txid_status(?)", (transaction_id,)).fetchone()
                finally:
                    conn.close()
                if status != "in progress":
                    return status == "committed"
            except (StorageError, self.errors):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def listen(self, signals: dict[str, _Signal]) -> threading.Thread:
        """A thread firing the signal of each channel NOTIFY names, until `close`; a lost connection is
        opened again after a pause (meanwhile the event feed's own look goes on)."""

        def run() -> None:
            while not self._stopping.is_set():
                try:
                    conn = self.connect()
                    try:
                        for channel in signals:
                            conn.execute(f"LISTEN {channel}")
                        if self._outage_logged:
                            _log.warning("PostgreSQL listener: listening again")
                            self._outage_logged = False
                        for signal in signals.values():
                            signal.fire()  # what happened while no one listened
                        while not self._stopping.is_set():
                            for message in conn.notifies(timeout=0.5):
                                signals[message.channel].fire()
                    finally:
                        conn.close()
                except Exception as error:  # noqa: BLE001 - the listener must outlive any failure
                    if self._stopping.is_set():
                        return
                    # Its connection ends first when the server goes: the others are as dead.
                    self.server_dropped_connections()
                    if not self._outage_logged:  # once an outage, not every second of it
                        told = error.detail if isinstance(error, StorageError) else self._told(error)
                        _log.warning("PostgreSQL listener: %s; listening again every second until it can", told)
                        self._outage_logged = True
                    self._stopping.wait(1.0)

        thread = threading.Thread(target=run, name="lazyboss-listen", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """End the listener."""
        self._stopping.set()


def _engine_for(address: str, sync: str = "full") -> _SQLiteEngine | _PostgresEngine:
    """The engine a database address names: a PostgreSQL URL (postgresql://, postgres://), else a file."""
    if _is_postgres_url(address):
        return _PostgresEngine(address)
    return _SQLiteEngine(address, sync)


class Store:
    """The jobs database: one SQLite file in WAL mode, shared by threads and processes.

    Every write goes through one connection, in an IMMEDIATE transaction that
    writes arriving together share (group commit, see `transaction`). Threads
    of this process queue on a lock for their turn (cheaper than SQLite's busy
    back-off); other processes on the same file wait in SQLite's busy
    timeout. Reads use a connection per thread. A write reads the clock and
    everything it decides on inside its transaction, once it holds the lock:
    time spent waiting must not age a lease, and nothing read before may have
    changed. Reads that make one answer are one statement or one `snapshot`.

    On PostgreSQL (a `postgresql://` address) the same holds across replicas:
    each replica's writes go through its own writer connection, in groups, and
    the groups of every replica take turns under the engine's lock (see
    `_PostgresEngine.begin`).
    """

    CLOCK_JUMP = 5.0  # seconds the wall clock moves beside the monotonic one that are a jump, not drift
    CLOCK_NOTE_EVERY = 3600.0  # NTP's drift (at most 1.8 s an hour) is noted this often, never taken for a jump

    def __init__(self, path: str, sync: str = "full", clock: Callable[[], float] = time.time):
        self.engine = _engine_for(path, sync)  # every statement only one engine knows goes through it
        self.path = path
        self.clock = clock
        self.queue_changed = _Signal()  # a job may have become claimable
        self.events_added = _Signal()  # the event log grew
        self.credentials_revoked = _Signal()  # a token was revoked or a session ended: their streams end
        self.jobs_purged = _Signal()  # jobs were deleted before they finished: their streams end
        self.feed = _EventFeed(self)  # the newest events, read once for every stream
        self.stopping = threading.Event()  # the server shuts down: no claims, no waiting
        self._local = threading.local()
        self._write_lock = threading.Lock()  # held by one writer at a time: its turn on the writer connection
        self._writer: sqlite3.Connection | None = None  # every write goes through this connection
        self._group: _Group | None = None  # the writes of the open transaction, not committed yet
        self._queued = 0  # writers waiting for the write lock: the open group waits for them
        self._queued_lock = threading.Lock()
        self.counters: Counter = Counter()  # (counter, job type) -> occurrences since start
        self._contacts: dict[str, float] = {}  # worker -> last contact, not yet written
        self._counters_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._files: tuple | None = None  # what the path named when the store opened (see check_file)
        self._written: tuple | None = None  # the file's size and mtime, and its checkpoint marks then
        self._overwritten: StorageError | None = None  # set when the file was written over: for good
        # The shared memory file, open for reading its checkpoint marks while the store is. Closing
        # any descriptor of a file drops every POSIX lock this process holds on it, SQLite's too:
        # it is opened once, and closed only after SQLite's connections are.
        self._shared_memory: int | None = None
        self.failure: StorageError | None = None  # why the file took no write lately: /health says it
        self._failure_lock = threading.Lock()
        self._validators: dict[str, Any] = {}  # a schema's JSON text -> its compiled validator
        self._validators_lock = threading.Lock()
        # When a reported result last met a result_schema (monotonic): see `_check_results_unlocked`.
        self._result_schema_met_at = -math.inf
        self._orphan_saved = False
        self._opened = False  # until then, whoever opens the store says why it cannot
        if self.engine.keeps_a_file:
            self._open_file()
        else:
            try:
                with self.database_errors():
                    self.migrate()
            except StorageError:
                self._close_connections()
                raise
            self._opened = True
        self.engine.listen(dict(zip(_EVENT_CHANNELS, (self.queue_changed, self.events_added))))

    def _open_file(self) -> None:
        """Open an SQLite file, refusing one lazyboss must not use, and migrate it."""
        path = self.path
        kind = _file_system_type(path)
        if kind in _NETWORK_FILE_SYSTEMS:
            raise StorageError(
                f"it is on a network file system ({kind}), where SQLite's WAL mode loses or damages "
                "data: put the database on a local disk",
                "network_file_system",
            )
        made = [name for name in (f"{path}-wal", f"{path}-shm") if not os.path.exists(name)]
        try:
            _refuse_unfit_file(path)
            with self.database_errors():
                if self.engine.schema_version(self.writer) == 0:
                    self.engine.prepare_new(self.writer)
                self.migrate()
                self._files = self._file_identity()
                # Open until `close`, unused: while it is, SQLite never deletes the WAL and shared
                # memory, even when the writer's connection is closed after a failed ROLLBACK.
                self._keeper = self._connect()
            self._opened = True
            with suppress(OSError):
                self._shared_memory = os.open(f"{path}-shm", os.O_RDONLY)
            with suppress(StorageError):  # noted: /health says it from the first request on
                # Restarted on a full disk, nothing has failed yet, but the first write will.
                self._prove_writable()
        except StorageError as error:
            self._close_connections()
            _remove_empty_wal(path, made)
            # An I/O error too: Python before 3.11 does not say that it was no room for the shared memory.
            reason = _why_unopenable(path) if error.code in ("cannot_open", "io_error") else None
            if reason is not None:
                raise StorageError(reason, error.code) from None
            raise

    # -- connections and transactions

    def _connect(self) -> sqlite3.Connection:
        """A new connection to the database, set up as all of the store's are."""
        if self._files is None:  # opening the store: this may create the file
            conn = self.engine.connect(self.path)
        else:  # later: the file that is there, never a new one in place of a deleted database
            self.check_file()
            conn = self.engine.connect(_file_uri(self.path, "rw"), uri=True)
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection for reads, opened on first use (and again if the server dropped it);
        inside a transaction, the transaction's."""
        writing = getattr(self._local, "writing", None)
        if writing is not None:
            return writing
        conn = getattr(self._local, "conn", None)
        if conn is None or not self.engine.usable(conn):
            if conn is not None:
                self._forget(conn)
            try:
                conn = self._local.conn = self._connect()
            except StorageError as failure:
                raise self._note_failure(failure) from None
        return conn

    def _forget(self, conn: Any) -> None:
        """Close a connection that no longer serves, and open a new one in its place when next needed."""
        with self._connections_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with suppress(Exception):  # it may have ended already
            conn.close()

    @property
    def writer(self) -> sqlite3.Connection:
        """The connection every write goes through, one transaction's turn at a time; opened on first use
        (and again if the server dropped it)."""
        conn = self._writer
        if conn is None or not self.engine.usable(conn):
            if conn is not None:
                self._forget(conn)
            try:
                conn = self._connect()
            except StorageError as failure:
                raise self._note_failure(failure) from None
            self.engine.prepare_writer(conn)
            self._writer = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: its changes are committed, or none of them on error. Inside, it is
        the only writer of this process (its reads see what it and the writes before it changed).

        Writes that arrive together share one SQLite transaction and one
        commit, so one fsync (group commit): each runs in a SAVEPOINT of the
        open IMMEDIATE transaction, and one that fails is rolled back to its
        savepoint alone. The group is committed when the last of them ends
        and no other writer waits for its turn (or it holds _GROUP_LIMIT);
        only then does `transaction` return, so nothing is acknowledged before
        it is on disk. If the commit fails (a full disk) every write of the
        group gets the error, and so do those before a failure after which
        SQLite rolled the whole transaction back.

        What `_count` tallies and `_log_committed` notes inside it reach
        `counters` and the log only once committed: a write rolled back (by its
        own error, or with its group when the commit fails) leaves no trace.
        The database's complaints come out as StorageError (see
        `database_errors`). A transaction opened inside another on the same
        thread is a RuntimeError at once: the write lock is not reentrant.

        On PostgreSQL the groups are the same, on each replica's writer
        connection: one BEGIN and lock, and one numbering of the events, NOTIFY
        and COMMIT for the group (see `_PostgresEngine`). A lost connection
        fails the write that met it and every write of its group (503): none of
        them is acknowledged, and the next write connects again.
        """
        if getattr(self._local, "writing", None) is not None:
            raise RuntimeError("Store.transaction inside another on the same thread would wait for itself forever")
        self._local.tally = tally = Counter()
        self._local.notes = notes = []
        with self._write_in_group() as conn:
            yield conn
        if tally:
            with self._counters_lock:
                self.counters.update(tally)
        for level, message, args in notes:
            _log.log(level, message, *args)

    @contextmanager
    def _write_in_group(self) -> Iterator[sqlite3.Connection]:
        """A write: in the open group's transaction, once this thread's turn came, and answered once the
        group is committed (see `transaction`)."""
        with self._queued_lock:
            self._queued += 1
        self._write_lock.acquire()
        with self._queued_lock:
            self._queued -= 1
        try:
            with self.database_errors():
                joined = self._group is not None  # the first write of a group needs no savepoint: it is alone
                # A group goes on on its own connection; one lost meanwhile fails the group (see `_undo_write`).
                conn = self._local.writing = self._writer if joined else self.writer
                if not joined:
                    self._begin_group(conn)
                group = self._group
                try:
                    if joined:
                        conn.execute("SAVEPOINT write")
                    yield conn
                    if joined:
                        conn.execute("RELEASE write")
                except BaseException as error:
                    self._undo_write(conn, joined, error)
                    raise
                group.size += 1
        finally:
            self._local.writing = None
            try:
                if self._group is not None and (self._queued == 0 or self._group.size >= _GROUP_LIMIT):
                    self._commit_group()
            finally:
                self._write_lock.release()
        group.wait()

    def _begin_group(self, conn: sqlite3.Connection) -> None:
        """Open a group's transaction (the engine's write lock taken); a failed begin leaves none open."""
        try:
            self.engine.begin(conn)
        except BaseException:
            self._roll_back(conn)
            raise
        self._group = _Group()

    def _undo_write(self, conn: sqlite3.Connection, joined: bool, error: BaseException) -> None:
        """Roll a failed write back to its savepoint, leaving the group's other writes as they are
        (the group's first write rolls the transaction back: it holds nothing else yet).

        When the database has already rolled the whole transaction back (SQLite
        after a full disk or an I/O error), the connection was lost, or the
        savepoint cannot be undone, the group fails: its writes before this one
        are lost, and each gets the error.
        """
        if joined and conn.in_transaction:
            try:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                return
            except self.engine.errors as undo_error:
                error = undo_error
        failure = self.engine.storage_error(error) if isinstance(error, self.engine.errors) else None
        self._end_group(failure or error, conn)

    def _commit_group(self) -> None:
        """Commit the open group, or roll it back if that fails; then release its writers."""
        conn = self._writer
        try:
            with self.database_errors():
                self.check_file()  # acknowledge nothing written to a file that is no longer the database
                self.engine.commit(conn)
        except BaseException as error:
            self._end_group(error, conn)
            return
        self._end_group(None, conn)

    def _end_group(self, failure: BaseException | None, conn: sqlite3.Connection) -> None:
        """Close the open group: committed (no failure), else rolled back and each writer told why."""
        group, self._group = self._group, None
        if failure is not None:
            self._roll_back(conn)
        if group is not None:
            group.end(failure)

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """End a failed transaction. If even ROLLBACK fails, close the writer's connection (that ends
        it too): the writers get the first error, and no write lock stays held."""
        if not conn.in_transaction:
            return  # SQLite ended it itself, as after a full disk
        try:
            conn.execute("ROLLBACK")
        except self.engine.errors as error:
            _log.warning("ROLLBACK failed (%s): closing the writer's connection", error)
            self._writer = None
            self._forget(conn)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads that make one answer: all see the file as the first one does (inside a transaction, that one's)."""
        conn = self.db
        if conn.in_transaction:
            yield conn
            return
        conn.execute(self.engine.begin_snapshot)
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _count(self, counter: str, job_type: str, number: int = 1) -> None:
        """Tally an occurrence for the metrics, in the running transaction."""
        self._local.tally[(counter, job_type)] += number

    def _log_committed(self, level: int, message: str, *args: Any) -> None:
        """Log a state change of the running transaction once it is committed (never if it is rolled back)."""
        self._local.notes.append((level, message, args))

    def migrate(self) -> None:
        """Bring the database's schema up to this release."""
        migrations = self.engine.migrations
        with self.transaction() as db:
            version = self.engine.schema_version(db)
            # Again: a newer lazyboss may have migrated it since it was looked at (on PostgreSQL, `begin`'s
            # lock makes replicas starting together migrate one after the other).
            _check_schema_version(version, len(migrations))
            self.engine.mark_as_ours(db)
            for number in range(version, len(migrations)):
                self.engine.apply(db, migrations[number])
                self.engine.set_schema_version(db, number + 1)
        self.engine.migrated = True

    def close(self) -> None:
        """Save what is noted, checkpoint the WAL and close every connection this store opened."""
        try:
            self.check_file()
            self.save_worker_contacts()
            self.checkpoint()
        except StorageError as error:
            _log.warning("final checkpoint failed: %s", error.detail)
            if error.code == "database_gone":
                self._save_orphaned()
        self.engine.close()
        self._close_connections()

    def _close_connections(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._writer = None
        if self._shared_memory is not None:
            os.close(self._shared_memory)
            self._shared_memory = None

    # -- the file's health

    @contextmanager
    def database_errors(self) -> Iterator[None]:
        """Raise SQLite's complaints about the file as StorageError, noted for /health until `recover`."""
        try:
            yield
        except self.engine.errors as error:
            failure = self.engine.storage_error(error)
            if failure is None:
                raise
            if failure.code != "database_busy":  # another process's lock says nothing about the file
                failure = self._note_failure(failure)
            raise failure from error

    def _note_failure(self, failure: StorageError) -> StorageError:
        """Remember why the file took no write, for /health; log it when that begins or changes.
        Return the failure to raise: a new one, without another's traceback."""
        with self._failure_lock:
            failure = self._overwritten or failure  # then whatever SQLite says follows from it
            changed = self.failure is None or self.failure.code != failure.code
            self.failure = type(failure)(failure.detail, failure.code)  # without the traceback's frames
        if changed and self._opened:  # before, whoever opens the store says why it cannot
            _log.error("database trouble: %s (%s); /health answers 503 until it is over", failure.detail, failure.code)
        return type(failure)(failure.detail, failure.code)

    def _file_identity(self) -> tuple:
        """(device, inode) of the database file, its WAL and its shared memory; None for one missing."""
        identity = []
        for suffix in ("", "-wal", "-shm"):
            try:
                status = os.stat(self.path + suffix)
                identity.append((status.st_dev, status.st_ino))
            except OSError:
                identity.append(None)
        return tuple(identity)

    def check_file(self) -> None:
        """Raise StorageError if the files this store opened were deleted, replaced or written over since.

        SQLite would go on writing to a deleted file: such writes vanish with
        the last connection, or are lost to whoever opens what is now at the path.
        """
        if self._files is None:
            return
        if self._file_identity() != self._files:
            failure = StorageError(
                "the database file (or its -wal or -shm) was deleted or replaced while lazyboss ran: "
                "nothing was written; put it back, or restart lazyboss to use what is there now",
                "database_gone",
            )
            self._note_failure(failure)
            raise failure
        if self._overwritten is None and self._written_over():
            self._overwritten = StorageError(
                "the database file was written over while lazyboss ran (another copy put onto it, as cp does): "
                "nothing was written; restart lazyboss to use the file that is there now",
                "database_overwritten",
            )
            self._note_failure(self._overwritten)
            self._set_wal_aside()
        if self._overwritten is not None:
            raise StorageError(self._overwritten.detail, self._overwritten.code)

    def _written_over(self) -> bool:
        """Whether something other than SQLite's checkpoints wrote the database file since the last look."""
        before = _checkpoint_marks(self._shared_memory)
        try:
            status = os.stat(self.path)
        except OSError:
            return False  # gone: the file's identity tells
        after = _checkpoint_marks(self._shared_memory)
        if before is None or before != after:
            return False  # no shared memory, or a checkpoint went on meanwhile: no verdict this time
        written = (status.st_size, status.st_mtime_ns)
        if self._written is not None and written != self._written[0]:
            backfilled, began = after
            if after == self._written[1] and backfilled[8:] == began:
                return True
        self._written = (written, after)
        return False

    def _set_wal_aside(self) -> None:
        """Once the database file was written over: copy this store's WAL beside it, and empty it.

        SQLite would fold the WAL's pages into the file put in place (at a checkpoint, at the last
        close, at the next start even after a kill -9), pages of another file that would damage it.
        The copy keeps what this server wrote since its last checkpoint; the rest of what it held
        went with the file that was written over.
        """
        copy = self._orphan_name("-wal")
        try:
            shutil.copyfile(f"{self.path}-wal", copy)
            os.truncate(f"{self.path}-wal", 0)
            _log.error("its WAL, what this lazyboss wrote since its last checkpoint, is saved in %s", copy)
        except OSError as error:
            _log.error("could not set the WAL aside in %s: %s", copy, error)

    def recover(self) -> None:
        """Check the files; after a failure, prove that the file takes writes again, or raise StorageError.

        The proof is a full checkpoint (the WAL folded into the database file
        and truncated, so a full disk has room again) and a one-page write. A
        damaged file, or a schema newer than this release, stays reported until lazyboss restarts.
        """
        try:
            self.check_file()
        except StorageError as error:
            if error.code == "database_gone":
                self._save_orphaned()
            raise
        if self.failure is None or self.failure.code in ("database_corrupt", "not_a_database", "schema_too_new"):
            return
        self._prove_writable()

    def _prove_writable(self) -> None:
        """A full checkpoint, a one-page write (see `recover`) and _ROOM_TO_HEAL free; once all hold, a
        failure noted before is over. StorageError, noted for /health, when one does not.

        A one-page write fits where the write that failed did not: without the room asked, the server
        would turn healthy at every reaper round, and at every restart, only to fail the next write.
        """
        free = self.disk_free()
        if free is not None and free < _ROOM_TO_HEAL:
            failure = StorageFull(
                f"the disk holding the database is full: {free >> 10} KiB left, and lazyboss waits for "
                f"{_ROOM_TO_HEAL >> 10} KiB before it counts on writes again",
                "storage_full",
            )
            self._note_failure(failure)
            raise failure
        if not self.checkpoint():
            return  # readers held the WAL: next round
        with self.transaction() as db:
            # The same number, but the header page is written.
            self.engine.set_schema_version(db, self.engine.schema_version(db))
        with self._failure_lock:
            healed, self.failure = self.failure, None
        if healed is not None:
            self._orphan_saved = False  # the file is back: losing it again must save what it holds then
            _log.warning("the database takes writes again (after %s)", healed.code)

    def _save_orphaned(self) -> None:
        """Once the database file is gone: copy what this store holds beside the path, and empty its WAL.

        The copy keeps every job this server acknowledged. An empty WAL cannot
        be replayed by SQLite into a file put in the database's place, which a
        WAL full of another file's pages would silently damage.
        """
        if self._orphan_saved:
            return
        self._orphan_saved = True
        copy = self._orphan_name()
        try:
            with closing(sqlite3.connect(_file_uri(copy, "rwc"), uri=True)) as target:
                self._keeper.backup(target)
            self._keeper.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _log.error("what this lazyboss held is saved in %s", copy)
        except (sqlite3.Error, OSError) as error:
            _log.error("could not save what this lazyboss held in %s: %s", copy, error)

    def _orphan_name(self, suffix: str = "") -> str:
        """A new name beside the database for what this store held: PATH.orphaned-TIME[-N]SUFFIX."""
        stamp = f"{self.path}.orphaned-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        return next(
            name
            for name in itertools.chain([stamp + suffix], (f"{stamp}-{n}{suffix}" for n in itertools.count(2)))
            if not os.path.lexists(name)
        )

    def trouble(self) -> StorageError | None:
        """What keeps the database from working, if anything: a quick look, for /health."""
        try:
            with self.database_errors():
                self.check_file()
                self.db.execute("SELECT COUNT(*) FROM types").fetchone()
                version = self.engine.schema_version(self.db)
            # A newer lazyboss migrated the database since this one opened it (a replica upgraded first):
            # this one's statements may misread it. Unhealthy until it is replaced (see `recover`).
            _check_schema_version(version, len(self.engine.migrations))
        except StorageError as failure:
            if failure.code == "schema_too_new":
                self._note_failure(failure)
            # else noted in `failure` (but for a busy lock, which is no trouble of the file)
        return self.failure

    # -- the event log

    def _record(self, db: sqlite3.Connection, kind: str, job_id: int, detail: Any = None, **context: Any) -> dict:
        """Append an event with what changed in the job; return the job's view."""
        self._record_all(db, [(job_id, kind)], detail, **context)
        return json.loads(self._views(db, [job_id])[job_id])

    def _record_all(
        self, db: sqlite3.Connection, changes: list[tuple[int, str]], detail: Any = None, **context: Any
    ) -> None:
        """Append an event for each (job id, kind), in this order, with what changed in the job (and `detail`)."""
        if not changes:
            return
        changed = self.engine.rows({"changed_id": "BIGINT", "kind": "TEXT"})
        recorded = db.execute(
            f"""INSERT INTO events (job_id, type, kind, at, detail, job, result, error, outcome_of)
                SELECT id, type, changed.kind, updated_at, ?, {self.engine.event_columns}
                FROM ({changed}) AS changed JOIN jobs ON jobs.id = changed.changed_id ORDER BY changed.ordinal
                RETURNING type, kind""",
            (None if detail is None else _encode(detail), _encode(changes)),
        ).fetchall()
        for (job_type, kind), number in Counter(map(tuple, recorded)).items():
            if kind in _EVENT_COUNTERS:
                self._count(_EVENT_COUNTERS[kind], job_type, number)
        extra = "".join(f" {key}={value}" for key, value in context.items())
        by_kind: dict[str, list[int]] = {}
        for job_id, kind in changes:
            by_kind.setdefault(kind, []).append(job_id)
        for kind, ids in by_kind.items():
            level = logging.DEBUG if kind == "progress" else logging.INFO
            if len(changes) == 1:
                self._log_committed(level, "job %s %s type=%s%s", ids[0], kind, recorded[0]["type"], extra)
            else:
                self._log_committed(level, "%d jobs %s: %s%s", len(ids), kind, _id_ranges(ids), extra)

    def _views(self, db: sqlite3.Connection, ids: list[int], shape: str | None = None) -> dict[int, str]:
        """The views of these jobs (as `shape` builds them, the job's JSON by default) as JSON texts, by id."""
        if not ids:
            return {}
        return dict(
            db.execute(
                f"SELECT id, {shape or self.engine.job_json} FROM jobs WHERE id IN ({self.engine.listed('BIGINT')})",
                (_encode(ids),),
            )
        )

    @staticmethod
    def _insert(
        db: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple], returning: str = ""
    ) -> list:
        """Insert `rows` (tuples of `columns`' values) in a few multi-row statements; the rows `returning` gives."""
        returned = []
        for chunk in _row_chunks(rows):
            statement = _insert_rows(table, columns, len(chunk), returning)
            inserted = db.execute(statement, [value for row in chunk for value in row])
            if returning:  # (psycopg refuses to fetch from a statement that returns nothing)
                returned += inserted.fetchall()
        return returned

    def _committed(self, queue_changed: bool) -> None:
        """Wake streams (and waiting workers when a job became claimable)."""
        self.events_added.fire()
        if queue_changed:
            self.queue_changed.fire()

    # -- submitting

    def type_settings(self, db: sqlite3.Connection, job_type: str) -> sqlite3.Row | None:
        """The stored settings of a job type, if any."""
        return db.execute("SELECT * FROM types WHERE name = ?", (job_type,)).fetchone()

    _VALIDATORS_KEPT = 64

    def _schema_check(
        self, schema: str | None, document: Any, what: str, code: str, deadline: float | None = None
    ) -> None:
        """Raise Invalid when `document` does not fit a type's schema (JSON text; None: no schema), or its
        check does not end by `deadline` (time.monotonic(); default `_SCHEMA_CHECK_SECONDS` from now: the
        documents of one request share one).

        Compiled validators are kept by schema text. A schema stored while the
        schema extra was installed is never skipped: without it the type's
        jobs or results are refused (503) until it is installed again.
        """
        if schema is None:
            return
        if _json_schema_package() is None:
            raise LazybossError(
                f"{what}: the type has a JSON Schema but this server cannot check it: "
                f"install its schema extra ({_SCHEMA_EXTRA}) and restart",
                "schema_unsupported",
                503,
            )
        with self._validators_lock:
            validator = self._validators.pop(schema, None)
            if validator is None:
                validator = _schema_validator(json.loads(schema))
            self._validators[schema] = validator  # the most recently used last
            while len(self._validators) > self._VALIDATORS_KEPT:
                del self._validators[next(iter(self._validators))]
        deadline = time.monotonic() + _SCHEMA_CHECK_SECONDS if deadline is None else deadline
        refusal = _schema_refusal(validator, document, what, code, deadline)
        if refusal is not None:
            raise refusal

    def submit_jobs(self, specs: list[JobSpec], idempotency_key: str | None = None, batch: bool = False) -> list[str]:
        """Insert jobs in one transaction; return each job's view as JSON text.

        `batch`: the jobs came as a list (more than one always do). An
        idempotency key names one submission: sent again with the same shape
        (one job, or a list of as many) it returns the jobs the first one made;
        with another shape it is a Conflict, and so it is once some of those
        jobs were deleted (retention or a purge): the answer is the whole
        submission or none, never part of it in place of the whole. No jobs
        at all is Invalid.
        """
        if not specs:
            raise Invalid("an empty batch: send at least one job")
        batch = batch or len(specs) > 1
        checked = self._check_parameters_unlocked(specs)
        with self.transaction() as db:
            submission = None
            if idempotency_key is not None:
                known = db.execute("SELECT * FROM submissions WHERE key = ?", (idempotency_key,)).fetchone()
                if known is not None:
                    if (bool(known["batch"]), known["jobs"]) != (batch, len(specs)):
                        made = f"a batch of {known['jobs']}" if known["batch"] else "one job (not a batch)"
                        raise Conflict(
                            f"Idempotency-Key {idempotency_key!r} was used for {made}: "
                            "resend that same submission, or use a new key",
                            "key_reused",
                        )
                    rows = db.execute(
                        f"SELECT {self.engine.job_json} FROM jobs WHERE submission = ? ORDER BY id", (known["id"],)
                    )
                    views = [row[0] for row in rows]
                    if len(views) < known["jobs"]:
                        raise Conflict(
                            f"Idempotency-Key {idempotency_key!r} was used for a batch of {known['jobs']} jobs, "
                            f"{known['jobs'] - len(views)} of which were deleted since (retention or a purge): "
                            "it makes no more jobs; use a new key for a new submission",
                            "key_expired",
                        )
                    return views
                submission = db.execute(
                    "INSERT INTO submissions (key, batch, jobs) VALUES (?, ?, ?) RETURNING id",
                    (idempotency_key, int(batch), len(specs)),
                ).fetchone()[0]
            views = self._insert_jobs(db, specs, submission=submission, checked=checked)
        self._committed(queue_changed=True)
        return list(views.values())

    def _check_parameters(self, specs: list[JobSpec], schemas: dict[str, str | None]) -> None:
        """Raise Invalid for the first job whose parameters do not fit its type's schema (`schemas`: the
        JSON text by type); all of them are checked within one `_SCHEMA_CHECK_SECONDS`."""
        if not any(schemas.values()):
            return  # the common case: no type has a schema, and no job needs a look
        deadline = time.monotonic() + _SCHEMA_CHECK_SECONDS
        for index, spec in enumerate(specs):
            what = f"job {index}: parameters" if len(specs) > 1 else "parameters"
            self._schema_check(schemas[spec.type], spec.parameters, what, "invalid_parameters", deadline)

    def _check_parameters_unlocked(self, specs: list[JobSpec]) -> tuple[dict, LazybossError | None]:
        """Check submitted parameters before the write lock is taken, so that a slow check holds back no
        other write: the schemas they were checked against and the refusal, if any, which
        `_insert_jobs` raises where it finds the same schemas (a resent submission gets its jobs). One
        statement reads them all (no snapshot needed: the transaction reads them again)."""
        types = list(dict.fromkeys(spec.type for spec in specs))
        stored = self.db.execute(
            f"SELECT name, parameters_schema FROM types WHERE name IN ({self.engine.listed('TEXT')})", (_encode(types),)
        )
        schemas = dict.fromkeys(types) | dict(stored.fetchall())
        try:
            self._check_parameters(specs, schemas)
        except LazybossError as refusal:
            return schemas, refusal
        return schemas, None

    def _insert_jobs(
        self,
        db: sqlite3.Connection,
        specs: list[JobSpec],
        submission: int | None = None,
        schedule: str | None = None,
        tick: str | None = None,
        checked: tuple[dict, LazybossError | None] | None = None,
    ) -> dict[int, str]:
        """Insert pending (or held) jobs and their `submitted` events in the running transaction; return their
        views (JSON text) by id, in the order given.
        A schedule's job names it, and its tick if it fired by itself. The parameters are checked against
        their types' schemas, unless `checked` (`_check_parameters_unlocked`) did so with the same ones."""
        now = self.clock()
        settings: dict[str, tuple] = {}
        for spec in specs:
            if spec.type not in settings:
                kind = self.type_settings(db, spec.type)
                settings[spec.type] = (
                    _resolve(kind, "max_attempts", _DEFAULT_MAX_ATTEMPTS),
                    _resolve(kind, "timeout", _DEFAULT_TIMEOUT),
                    _resolve(kind, "backoff_base", _DEFAULT_BACKOFF_BASE),
                    _resolve(kind, "backoff_max", _DEFAULT_BACKOFF_MAX),
                    _resolve(kind, "parameters_schema", None),
                    _resolve(kind, "claim_window", None),
                )
        schemas = {name: values[4] for name, values in settings.items()}
        if checked is None or checked[0] != schemas:
            self._check_parameters(specs, schemas)
        elif checked[1] is not None:
            raise checked[1]
        rows = []
        for spec in specs:
            max_attempts, timeout, backoff_base, backoff_max, _, claim_window = settings[spec.type]
            rows.append(
                (
                    spec.type,
                    "held" if spec.hold else "pending",
                    _encode(spec.parameters),
                    spec.priority if spec.priority is not None else _DEFAULT_PRIORITY,
                    spec.run_at if spec.run_at is not None else now + (spec.delay or 0),
                    spec.max_attempts if spec.max_attempts is not None else max_attempts,
                    spec.timeout if spec.timeout is not None else timeout,
                    backoff_base,
                    backoff_max,
                    now,
                    now,
                    submission,
                    schedule,
                    tick,
                    None if spec.claims is None else _encode(spec.claims),
                    spec.claim_window if spec.claim_window is not None else claim_window,
                )
            )
        # A few multi-row statements for the lot: far cheaper than one per job, triggers and all. They give
        # back the jobs' views (cheaper than reading them again).
        views = dict(self._insert(db, "jobs", _JOB_COLUMNS, rows, f"id, {self.engine.job_json}"))
        ids = sorted(views)
        db.execute(
            f"""INSERT INTO events (job_id, type, kind, at, job, result, error)
                SELECT id, type, 'submitted', updated_at, {self.engine.submitted_event_columns}
                FROM jobs WHERE id IN ({self.engine.listed("BIGINT")}) ORDER BY id""",
            (_encode(ids),),
        )
        for job_type, number in Counter(spec.type for spec in specs).items():
            self._count("jobs_submitted", job_type, number)
        self._log_committed(logging.INFO, "job%s submitted", f" {ids[0]}" if len(ids) == 1 else f"s {ids[0]}-{ids[-1]}")
        return {job_id: views[job_id] for job_id in ids}

    # -- reading

    def follow_job(self, job_id: str) -> tuple[str, str, int]:
        """A job's view as JSON text, its status and the id of its latest event (0 if none), read as one."""
        row = self.db.execute(
            f"""SELECT {self.engine.job_json}, status, (SELECT MAX(id) FROM events WHERE job_id = jobs.id)
                FROM jobs WHERE id = ?""",
            (_parse_id(job_id, "job"),),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row[0], row[1], row[2] or 0

    def large_fields_at(self, job_id: str, event_id: int) -> dict[str, str]:
        """A job's parameters, result and error (JSON texts) as they were at one of its events."""
        row = self.db.execute(
            f"""SELECT COALESCE({self.engine.json("parameters")}, 'null'),
                   {self.engine.recorded("result", "jobs.id", "?")}, {self.engine.recorded("error", "jobs.id", "?")}
                FROM jobs WHERE id = ?""",
            (event_id, event_id, _parse_id(job_id, "job")),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return dict(zip(_EVENT_CHANGES, row))

    def has_job(self, job_id: str) -> bool:
        """Whether the job is (still) in the database."""
        return self.db.execute("SELECT 1 FROM jobs WHERE id = ?", (_parse_id(job_id, "job"),)).fetchone() is not None

    def get_job(self, job_id: str) -> dict:
        """One job's view, or NotFound."""
        row = self.db.execute(
            f"SELECT {self.engine.job_json} FROM jobs WHERE id = ?", (_parse_id(job_id, "job"),)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return json.loads(row[0])

    def _job_row(self, db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (_parse_id(job_id, "job"),)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def list_jobs(
        self, statuses: list[str], types: list[str], limit: int, before: int | None
    ) -> Iterator[tuple[list[str], int | None]]:
        """Jobs newest first, filtered, as JSON texts in pages of about _WRITE_BUDGET bytes.

        Each page is its own short read, taken when the one before has been
        sent. With the last page comes the id to continue below when more
        jobs remain (else None).
        """
        where, args = [], []
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += statuses
        if types:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            args += types

        def below(last: int | None) -> tuple[str, list]:
            bounds = where + ([] if last is None else ["id < ?"])
            return (f"WHERE {' AND '.join(bounds)}" if bounds else ""), args + ([] if last is None else [last])

        while True:
            clause, values = below(before)
            rows = self.db.execute(
                f"SELECT id, {self.engine.job_json} FROM jobs {clause} ORDER BY id DESC LIMIT ?", (*values, limit)
            )
            page = self._within_budget(rows, lambda row: len(row[1]))
            views = [row[1] for row in page]
            if not page:
                yield views, None
                return
            limit, before = limit - len(page), page[-1][0]
            if limit == 0:
                clause, values = below(before)
                more = self.db.execute(f"SELECT 1 FROM jobs {clause} LIMIT 1", values).fetchone()
                yield views, before if more else None
                return
            yield views, None
            if sum(map(len, views)) < _WRITE_BUDGET:  # not cut short by the budget: there are no more
                return

    def list_attempts(self, job_id: str) -> list[dict]:
        """A job's attempts, oldest first."""
        with self.snapshot() as db:
            row = self._job_row(db, job_id)
            rows = db.execute(
                f"SELECT {self.engine.attempt_json} FROM attempts WHERE job_id = ? ORDER BY id", (row["id"],)
            )
            return [json.loads(attempt[0]) for attempt in rows]

    def get_attempt(self, job_id: str, attempt_id: str) -> dict:
        """One attempt of a job, or NotFound."""
        with self.snapshot() as db:
            row = self._attempt_row(db, job_id, attempt_id)
            view = db.execute(
                f"SELECT {self.engine.attempt_json} FROM attempts WHERE job_id = ? AND id = ?",
                (row["job_id"], row["id"]),
            ).fetchone()
        return json.loads(view[0])

    def _attempt_row(self, db: sqlite3.Connection, job_id: str, attempt_id: str) -> sqlite3.Row:
        row = db.execute(
            "SELECT * FROM attempts WHERE job_id = ? AND id = ?",
            (_parse_id(job_id, "job"), _parse_id(attempt_id, "attempt")),
        ).fetchone()
        if row is None:
            self._job_row(db, job_id)
            raise NotFound(f"job {job_id} has no attempt {attempt_id}")
        return row

    # -- claiming

    def claim_jobs(
        self, worker: str, types: list[str] | None = None, limit: int = 1, labels: dict[str, str] | None = None
    ) -> list[_Claim]:
        """Hand up to `limit` of the most urgent due jobs to `worker`, each as a new attempt, atomically.

        A job still reserved by its claims goes only to a worker whose `labels`
        match every claim. A type with a concurrency limit gives no more jobs
        than it has free slots. A batch stops early once the jobs' parameters
        fill about _WRITE_BUDGET bytes (one job goes alone, however large): an
        answer is never held whole beyond that.
        """
        if self.stopping.is_set():
            return []
        with self.transaction() as db:
            now = self.clock()
            types = self._types_to_read(db, types)
            if types == []:
                return []
            rows: list[sqlite3.Row] = []
            budget = _WRITE_BUDGET
            # Only a batch can be cut short by a type's slots: one job is only ever of a type with a free slot.
            limits = "SELECT EXISTS (SELECT 1 FROM types WHERE concurrency IS NOT NULL)"
            limited = limit > 1 and db.execute(limits).fetchone()[0]
            # A batch that a type's slots cut short looks again, among the types that still have room.
            while len(rows) < limit and budget > 0:
                claimable, parameters = self.engine.claimable(types, labels or {}, now, limit - len(rows), budget)
                taken = db.execute(
                    f"""UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                           attempt = attempts + 1, assignee = ?, lease_expires_at = ? + timeout,
                           updated_at = ?, progress = NULL
                       WHERE id IN ({claimable})
                       RETURNING id, attempt, priority, run_at, length(parameters) AS size,
                           {self.engine.claimed_job_json} AS view""",
                    (worker, now, now, *parameters),
                ).fetchall()
                rows += taken
                budget -= sum(row["size"] for row in taken)
                if not taken or not limited:
                    break
            if not rows:
                return []
            rows.sort(key=lambda row: (-row["priority"], row["run_at"], row["id"]))  # the queue's order
            ids = [row["id"] for row in rows]
            self._insert(
                db,
                "attempts",
                _ATTEMPT_COLUMNS,
                [(row["id"], row["attempt"], worker, "processing", now) for row in rows],
            )
            context = {"attempt": rows[0]["attempt"]} if len(rows) == 1 else {}
            self._record_all(db, [(job_id, "claimed") for job_id in ids], worker=worker, **context)
        self._committed(queue_changed=False)
        return [_Claim(str(row["id"]), str(row["attempt"]), row["view"]) for row in rows]

    def claim_next_job(self, worker: str, types: list[str] | None = None) -> dict | None:
        """Hand the most urgent due job to `worker` as a new attempt, atomically: the job with `startedAt`."""
        claims = self.claim_jobs(worker, types)
        return json.loads(claims[0].view) if claims else None

    def seconds_until_due(self, types: list[str] | None, labels: dict[str, str] | None = None) -> float:
        """Seconds until a job of these types can be claimed by a worker with these labels (0: one can
        now); a paused type's never can, nor a type's whose slots are all taken (until one is freed, which
        wakes waiting workers). A reserved job counts from when its window ends, and also (it may be the
        worker's) from when it falls due."""
        now, db = self.clock(), self.db  # statements of their own: a waiting worker's look opens no transaction
        types = self._types_to_read(db, types)
        if types == []:
            return float("inf")
        query, parameters = self.engine.next_jobs(types, labels or {}, now, 1)
        if db.execute(query, parameters).fetchone():
            return 0.0  # the claim's own query: found through the queue's indexes
        waiting = f"jobs.status = 'pending' AND {_UNPAUSED} AND {_HAS_ROOM}"
        if types:
            waiting += f" AND jobs.type IN ({', '.join('?' * len(types))})"
        row = db.execute(
            f"""SELECT MIN(next) FROM (
                SELECT MIN(run_at) AS next FROM jobs WHERE {waiting} AND {_OPEN}
                UNION ALL SELECT MIN(reserved_until) FROM jobs WHERE {waiting} AND jobs.reserved_until IS NOT NULL
                UNION ALL SELECT MIN(run_at) FROM jobs
                    WHERE {waiting} AND jobs.reserved_until IS NOT NULL AND run_at > ?) AS due""",
            (*(types or ()), *(types or ()), *(types or ()), now),
        ).fetchone()
        return float("inf") if row[0] is None else max(0.0, row[0] - now)

    @staticmethod
    def _types_to_read(db: sqlite3.Connection, types: list[str] | None) -> list[str] | None:
        """The types a claim of `types` (None: any) reads: the given ones but those paused or full, or,
        for any type while one is blocked, the types with pending jobs that may hand them out. Each is
        then read through its own index, so that a blocked type's backlog is never walked. None: read the
        queue's index whole (nothing is blocked, or too many types to name); []: nothing may be claimed."""
        blocked = {row[0] for row in db.execute(f"{_PAUSED_TYPES} UNION {_FULL_TYPES}")}
        if types:
            return [job_type for job_type in types if job_type not in blocked]
        if not blocked:
            return None
        pending = db.execute("SELECT type FROM job_counts WHERE status = 'pending' AND number > 0").fetchall()
        names = [row[0] for row in pending if row[0] not in blocked]
        return names if len(names) <= _MAX_FILTER_VALUES else None

    def wait_for_jobs(
        self,
        worker: str,
        types: list[str] | None,
        wait: float,
        gone: Callable[[], bool] = lambda: False,
        limit: int = 1,
        labels: dict[str, str] | None = None,
    ) -> list[_Claim]:
        """Claim up to `limit` jobs, waiting up to `wait` seconds for the first to be submitted or fall due:
        then it takes what is due, up to `limit`, and waits no more.

        A waiting worker only reads until it sees a job it may claim, so it
        costs next to nothing while none is (a paused type's jobs never are).
        It gives up without claiming once `gone()` says its client has left.
        """
        deadline = time.monotonic() + wait
        while not self.stopping.is_set() and not gone():
            seen = self.queue_changed.generation
            due_in = self.seconds_until_due(types, labels)
            if due_in == 0:
                claims = self.claim_jobs(worker, types, limit, labels)
                if claims:
                    return claims
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.queue_changed.wait(seen, min(remaining, due_in, _FOREIGN_WRITE_POLL))
        return []

    def open_lapsed_reservations(self, limit: int = 500) -> int:
        """Move jobs whose claim window passed to the open queue (the claim finds them either way, but
        the open queue's indexes are the cheaper way); return how many."""
        with self.transaction() as db:
            lapsed = _encode(
                [
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM jobs WHERE status = 'pending' AND reserved_until <= ? LIMIT ?",
                        (self.clock(), limit),
                    )
                ]
            )
            listed = self.engine.listed("BIGINT")
            db.execute(f"DELETE FROM job_claims WHERE job_id IN ({listed})", (lapsed,))
            return db.execute(f"UPDATE jobs SET reserved_until = NULL WHERE id IN ({listed})", (lapsed,)).rowcount

    def release_claims(self, claims: list[_Claim]) -> None:
        """Put jobs back at once when the answer to their claim never left: the worker was gone before it knew.

        Each attempt is forgotten and does not count against its job's
        attempts (its id is not used again); a job cancelled meanwhile stays so.
        """
        with self.transaction() as db:
            now = self.clock()
            released = []
            for claim in claims:
                job = db.execute(
                    "SELECT id, assignee FROM jobs WHERE id = ? AND attempt = ? AND status = 'processing'",
                    (int(claim.job), int(claim.attempt)),
                ).fetchone()
                if job is None:
                    continue
                db.execute("DELETE FROM attempts WHERE job_id = ? AND id = ?", (job["id"], int(claim.attempt)))
                db.execute(
                    """UPDATE jobs SET status = 'pending', budget_start = budget_start + 1, updated_at = ?,
                           assignee = NULL, attempt = NULL, lease_expires_at = NULL, progress = NULL
                       WHERE id = ?""",
                    (now, job["id"]),
                )
                detail = {"attempt": claim.attempt, "reason": "the worker left before it got the job"}
                self._record(db, "released", job["id"], detail, attempt=claim.attempt, worker=job["assignee"])
                released.append(job["id"])
        if released:
            self._committed(queue_changed=True)

    def stop_waiting(self) -> None:
        """Refuse further claims and release every waiting worker and stream."""
        self.stopping.set()
        self.queue_changed.fire()
        self.events_added.fire()

    # -- reporting

    def _running_attempt(
        self, db: sqlite3.Connection, job_id: str, attempt_id: str, worker: str, resent: str | None = None
    ) -> tuple | None:
        """The job and running attempt a worker reports on, after checking it may.

        None when the attempt already ended as `resent`: the same report sent
        again (its answer was lost), which changes nothing.
        """
        attempt = self._attempt_row(db, job_id, attempt_id)
        if attempt["worker"] != worker:
            raise Forbidden(f"attempt {attempt_id} of job {job_id} belongs to worker {attempt['worker']!r}")
        job = self._job_row(db, job_id)
        if resent is not None and attempt["status"] == resent:
            return None
        if attempt["status"] != "processing":
            self._refuse_report(job, attempt)
        return job, attempt

    def _refuse_report(self, job: sqlite3.Row, attempt: sqlite3.Row) -> None:
        """Conflict for a report on an attempt that is no longer running."""
        if attempt["status"] == "cancelled":
            raise Conflict(f"job {job['id']} was cancelled: stop the work", "cancelled")
        if attempt["status"] == "expired":
            raise Conflict(
                f"attempt {attempt['id']} of job {job['id']} expired (no progress within {job['timeout']:g} s)",
                "expired",
            )
        raise Conflict(f"attempt {attempt['id']} of job {job['id']} already ended as {attempt['status']}", "finished")

    def report_attempts(self, worker: str, reports: list[_Report]) -> list[str | LazybossError]:
        """Take results and errors of `worker`'s attempts, all in one transaction.

        For each report, in order: the job's view (JSON text) once taken, or
        as it is for the same report sent again (its answer was lost), else
        the refusal (unknown, another worker's, no longer running). A refused
        report changes nothing and stops none of the others.
        """
        deadline = time.monotonic() + _SCHEMA_CHECK_SECONDS
        checked = self._check_results_unlocked(reports, deadline)
        with self.transaction() as db:
            now = self.clock()
            outcomes: list[int | LazybossError] = []
            views: dict[int, str] = {}  # of the jobs done, as their reports left them
            changes, requeued, ended_types = [], False, set()
            schemas: dict[str, Any] = {}
            for index, report in enumerate(reports):
                resent = "done" if report.kind == "result" else "failed"
                try:
                    running = self._running_attempt(db, report.job, report.attempt, worker, resent)
                except LazybossError as refusal:
                    outcomes.append(refusal)
                    continue
                if running is None:
                    outcomes.append(int(report.job))
                    continue
                job, attempt = running
                if report.kind == "result":
                    if job["type"] not in schemas:  # one look per type, however many reports
                        schemas[job["type"]] = _resolve(self.type_settings(db, job["type"]), "result_schema", None)
                    schema, before = schemas[job["type"]], checked.get(index)
                    if schema is not None:
                        self._result_schema_met_at = time.monotonic()
                    try:
                        if before is None or before[0] != schema:  # not checked before the lock against this one
                            self._schema_check(schema, report.value, "result", "invalid_result", deadline)
                        elif before[1] is not None:
                            raise before[1]
                    except LazybossError as refusal:  # the attempt goes on: the worker may send another
                        outcomes.append(refusal)
                        continue
                    result = _encode(report.value)
                    db.execute(
                        "UPDATE attempts SET status = 'done', finished_at = ?, result = ? WHERE job_id = ? AND id = ?",
                        (now, result, job["id"], attempt["id"]),
                    )
                    # Done, the job changes no more in this transaction: its view is the answer's.
                    (views[job["id"]],) = db.execute(
                        f"""UPDATE jobs SET status = 'done', result = ?, error = NULL, finished_at = ?,
                               updated_at = ?, lease_expires_at = NULL WHERE id = ? RETURNING {self.engine.job_json}""",
                        (result, now, now, job["id"]),
                    ).fetchone()
                    kind = "done"
                else:
                    kind, back = self._end_attempt(db, job, "failed", report.value, now)
                    requeued = requeued or back
                changes.append((job["id"], kind))
                outcomes.append(job["id"])
                ended_types.add(job["type"])
            context = {"attempt": reports[0].attempt} if len(reports) == 1 else {}
            self._record_all(db, changes, worker=worker, **context)
            views.update(self._views(db, [job for job in outcomes if isinstance(job, int) and job not in views]))
            freed = self._limits_any(db, ended_types)
        if changes:
            self._committed(queue_changed=requeued or freed)
        return [outcome if isinstance(outcome, LazybossError) else views[outcome] for outcome in outcomes]

    def _check_results_unlocked(
        self, reports: list[_Report], deadline: float
    ) -> dict[int, tuple[str, LazybossError | None]]:
        """Check reported results against their types' result_schema before the write lock is taken, so that
        a slow check holds back no other write (as `_check_parameters_unlocked` does for submits): by the
        report's index, the schema checked and the refusal, if any. The transaction takes an outcome only
        where it reads the same schema, and checks again where it does not. One statement reads them all.

        Only while result schemas are in use: one met inside a transaction, or set by `put_type`, in the
        last minute. Where no type has one (most servers) a report reads nothing more (a read after each
        commit costs a claim→result cycle 5 to 8 %); a schema set by another replica is checked inside
        the lock until a report first meets it.
        """
        if time.monotonic() - self._result_schema_met_at > _RESULT_SCHEMAS_IN_USE:
            return {}
        jobs = {index: _as_id(report.job) for index, report in enumerate(reports) if report.kind == "result"}
        wanted = sorted({job for job in jobs.values() if job is not None})
        if not wanted:
            return {}
        stored = dict(
            self.db.execute(
                f"""SELECT jobs.id, types.result_schema FROM jobs JOIN types ON types.name = jobs.type
                    WHERE types.result_schema IS NOT NULL AND jobs.id IN ({self.engine.listed("BIGINT")})""",
                (_encode(wanted),),
            ).fetchall()
        )
        checked: dict[int, tuple[str, LazybossError | None]] = {}
        for index, job in jobs.items():
            if job in stored:
                try:
                    self._schema_check(stored[job], reports[index].value, "result", "invalid_result", deadline)
                    checked[index] = (stored[job], None)
                except LazybossError as refusal:
                    checked[index] = (stored[job], refusal)
        return checked

    def complete_attempt(self, job_id: str, attempt_id: str, worker: str, result: Any) -> dict:
        """Accept the result of the job's current attempt: the job is done."""
        return self._report_one(worker, _Report(job_id, attempt_id, "result", result))

    def fail_attempt(self, job_id: str, attempt_id: str, worker: str, error: Any) -> dict:
        """Take the error of the job's current attempt: retry later, or fail the job."""
        return self._report_one(worker, _Report(job_id, attempt_id, "error", error))

    def _report_one(self, worker: str, report: _Report) -> dict:
        (outcome,) = self.report_attempts(worker, [report])
        if isinstance(outcome, LazybossError):
            raise outcome
        return json.loads(outcome)

    def _end_attempt(
        self, db: sqlite3.Connection, job: sqlite3.Row, outcome: str, error: Any, now: float
    ) -> tuple[str, bool]:
        """End a running attempt unsuccessfully; requeue with back-off while attempts remain.
        Return the kind of event to record, and whether the job went back to pending."""
        self._count("attempts_expired" if outcome == "expired" else "attempts_failed", job["type"])
        db.execute(
            "UPDATE attempts SET status = ?, finished_at = ?, error = ? WHERE job_id = ? AND id = ?",
            (outcome, now, _encode(error), job["id"], job["attempt"]),
        )
        failures = job["attempts"] - job["budget_start"]
        if failures < job["max_attempts"]:
            run_at = now + _backoff_delay(failures, job["backoff_base"], job["backoff_max"])
            db.execute(
                """UPDATE jobs SET status = 'pending', error = ?, run_at = ?, updated_at = ?,
                       assignee = NULL, attempt = NULL, lease_expires_at = NULL, progress = NULL
                   WHERE id = ?""",
                (_encode(error), run_at, now, job["id"]),
            )
            return ("expired" if outcome == "expired" else "retrying"), True
        db.execute(
            """UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ?,
                   lease_expires_at = NULL WHERE id = ?""",
            (_encode(error), now, now, job["id"]),
        )
        return "failed", False

    def expire_stale_attempts(self, limit: int = 500) -> int:
        """End attempts whose lease ran out; return how many."""
        with self.transaction() as db:
            now = self.clock()
            stale = db.execute(
                "SELECT * FROM jobs WHERE status = 'processing' AND lease_expires_at < ? LIMIT ?", (now, limit)
            ).fetchall()
            changes = []
            for job in stale:
                error = {"error": "expired", "detail": f"no progress within the {job['timeout']:g} s lease"}
                kind, _ = self._end_attempt(db, job, "expired", error, now)
                changes.append((job["id"], kind))
            if len(stale) == 1:
                self._record_all(db, changes, attempt=stale[0]["attempt"], worker=stale[0]["assignee"])
            elif stale:
                self._record_all(db, changes)
        if stale:
            self._committed(queue_changed=True)
        return len(stale)

    def keep_leases_through_clock_jumps(self, wall: float, monotonic: float, boot: str) -> float:
        """Move the leases of running attempts on by as far as the wall clock jumped forward since it was last
        looked at; return how far it jumped (back: negative), 0.0 if it did not.

        `wall` and `monotonic` are the host's clocks read together, `boot` which boot of which host the
        monotonic one counts from. A lease is time given to a worker, but it is kept as a time on the wall
        clock: when NTP sets a clock that started hours behind, every lease would run out at once and
        every running job be taken from a worker that is still at it. A jump is the wall clock moving more
        than `CLOCK_JUMP` seconds beside the monotonic one; a lease renewed since the jump runs on the new
        clock already and stays. A clock that goes back makes leases last that much longer, which takes
        nothing from anyone, but none is left past a full lease from now (a step forward by mistake, put
        back, would leave leases a year long). The database notes each host's clocks, so that processes sharing
        it move a lease once; a round that finds nothing new only reads (a write an hour notes the drift).
        """
        offset = wall - monotonic
        query = "SELECT wall_offset, noted_at FROM host_clocks WHERE boot = ?"
        noted = self.db.execute(query, (boot,)).fetchone()
        if noted is not None and abs(offset - noted[0]) <= self.CLOCK_JUMP and wall - noted[1] < self.CLOCK_NOTE_EVERY:
            return 0.0
        moved = 0
        with self.transaction() as db:
            now = self.clock()
            noted = db.execute(query, (boot,)).fetchone()  # again, under the write lock: another process may have
            jump = 0.0 if noted is None or abs(offset - noted[0]) <= self.CLOCK_JUMP else offset - noted[0]
            if jump < 0:  # no lease runs longer than a renewal now would make it (an earlier jump may be undone)
                db.execute(
                    """UPDATE jobs SET lease_expires_at = ? + timeout
                       WHERE status = 'processing' AND lease_expires_at > ? + timeout""",
                    (now, now),
                )
            if jump > 0:
                moved = db.execute(
                    """UPDATE jobs SET lease_expires_at = lease_expires_at + ?
                       WHERE status = 'processing' AND lease_expires_at - timeout <= ?""",
                    # Renewed before the jump, by the clock as it was: plus the drift it may have gained unnoted
                    # (a lease renewed in those seconds must move too; one renewed after the jump seldom falls in).
                    (jump, monotonic + noted[0] + self.CLOCK_JUMP),
                ).rowcount
            db.execute(
                """INSERT INTO host_clocks (boot, wall_offset, noted_at) VALUES (?, ?, ?)
                   ON CONFLICT (boot) DO UPDATE SET wall_offset = excluded.wall_offset, noted_at = excluded.noted_at""",
                (boot, offset, wall),
            )
            db.execute("DELETE FROM host_clocks WHERE noted_at < ?", (wall - 7 * 86400,))  # boots long gone
        if jump > 0:
            _log.warning(
                "the wall clock jumped %.1f s forward: %d running attempts keep the time their leases gave them",
                jump,
                moved,
            )
        elif jump < 0:
            _log.warning(
                "the wall clock went %.1f s back: no running attempt's lease runs past a full lease from now", -jump
            )
        return jump

    def record_progress(self, job_id: str, attempt_id: str, worker: str, items: list[ProgressItem]) -> list[int]:
        """Store a worker's progress events once each and renew the lease; return the ids taken."""
        with self.transaction() as db:
            now = self.clock()
            job, attempt = self._running_attempt(db, job_id, attempt_id, worker)  # type: ignore[misc]
            fresh = []
            for item in items:
                inserted = db.execute(
                    """INSERT INTO progress (job_id, attempt_id, id, event, data, at)
                       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                    (job["id"], attempt["id"], item.id, item.event, item.data, now),
                ).rowcount
                if inserted:
                    fresh.append(item)
            percents = [float(item.data) for item in fresh if item.event == "percent"]
            db.execute(
                """UPDATE jobs SET lease_expires_at = ? + timeout, progress = COALESCE(?, progress),
                       updated_at = CASE WHEN ? THEN ? ELSE updated_at END WHERE id = ?""",
                (now, percents[-1] if percents else None, bool(fresh), now, job["id"]),
            )
            if fresh:
                detail = {"attempt": str(attempt["id"]), "ids": [item.id for item in fresh]}
                self._record(db, "progress", job["id"], detail, attempt=attempt["id"], worker=worker)
        if fresh:
            self._committed(queue_changed=False)
        return [item.id for item in items]

    def attempt_log(self, job_id: str, attempt_id: str, tail: int | None = None) -> tuple[str, int]:
        """The log chunks an attempt reported, in id order, as one text (only its last `tail`
        characters if given), and the id of the newest progress event it takes into account."""
        newest, chunks, size = 0, [], 0
        with self.snapshot() as db:
            attempt = self._attempt_row(db, job_id, attempt_id)
            rows = db.execute(
                "SELECT id, event, data FROM progress WHERE job_id = ? AND attempt_id = ? ORDER BY id DESC",
                (attempt["job_id"], attempt["id"]),
            )
            for progress_id, event, data in rows:
                newest = newest or progress_id
                if event == "log_chunk":
                    chunks.append(data)
                    size += len(data)
                    if tail is not None and size >= tail:
                        break
        text = "".join(reversed(chunks))
        return (text if tail is None else text[-tail:]), newest

    def last_event_id(self) -> int:
        """The newest event's id, 0 when there is none."""
        return self.db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0

    def events_after(self, after: int, jobs: list[str], types: list[str], limit: int = 500) -> list[_Event]:
        """Events newer than `after`, oldest first, of these jobs and types, each with its job as the
        event changed it (see the engine's `event_job_json`).

        At most `limit` of them and about _WRITE_BUDGET bytes (one at least):
        a replay of large jobs is read and sent a bounded piece at a time.
        Streams ask `feed`, which reads the newest events once for all of them.
        """
        where, args = ["events.id > ?"], [after]
        if jobs:
            where.append(f"events.job_id IN ({', '.join('?' * len(jobs))})")
            args += [_parse_id(job, "job") for job in jobs]
        if types:
            where.append(f"events.type IN ({', '.join('?' * len(types))})")
            args += types
        rows = self.db.execute(
            f"""SELECT events.id, events.job_id, events.type, events.kind, events.at, {self.engine.event_detail},
                    {self.engine.event_job_json}
                FROM events LEFT JOIN jobs ON jobs.id = events.job_id
                WHERE {" AND ".join(where)} ORDER BY events.id LIMIT ?""",
            (*args, limit),
        )
        return [
            _Event.from_row(row)
            for row in self._within_budget(
                rows, lambda row: sum(len(row[column] or "") for column in ("job", "detail", *_EVENT_CHANGES))
            )
        ]

    @staticmethod
    def _within_budget(rows: sqlite3.Cursor, size: Callable[[Any], int]) -> list:
        """The rows of a query up to _WRITE_BUDGET bytes (one at least); the query is then ended."""
        taken, total = [], 0
        try:
            for row in rows:
                taken.append(row)
                total += size(row)
                if total >= _WRITE_BUDGET:
                    break
        finally:
            rows.close()  # ends the statement and with it the read: a slow client holds no snapshot
        return taken

    # -- supervising

    def _job_in(self, db: sqlite3.Connection, job_id: str, statuses: tuple[str, ...], done_to_it: str) -> sqlite3.Row:
        """A job whose status is one of `statuses`, else Conflict: only such jobs can be `done_to_it`."""
        job = self._job_row(db, job_id)
        if job["status"] not in statuses:
            allowed = f"{', '.join(statuses[:-1])} or {statuses[-1]}" if len(statuses) > 1 else statuses[0]
            raise Conflict(f"job {job_id} is {job['status']}: only {allowed} jobs can be {done_to_it}")
        return job

    def cancel_job(self, job_id: str) -> dict:
        """Cancel a held, pending or processing job at once."""
        with self.transaction() as db:
            now = self.clock()
            job = self._job_in(db, job_id, ("held", "pending", "processing"), "cancelled")
            self._cancel(db, [job["id"]], now)
            view = json.loads(self._views(db, [job["id"]])[job["id"]])
            freed = job["status"] == "processing" and self._limits_any(db, {job["type"]})
        self._committed(queue_changed=freed)
        return view

    def _limits_any(self, db: sqlite3.Connection, job_types: set[str]) -> bool:
        """Whether one of these types has a concurrency limit: a job of it that stops processing frees a
        slot, and the caller wakes waiting workers for it."""
        return (
            bool(job_types)
            and db.execute(
                f"""SELECT EXISTS (SELECT 1 FROM types
                   WHERE concurrency IS NOT NULL AND name IN ({self.engine.listed("TEXT")}))""",
                (_encode(sorted(job_types)),),
            ).fetchone()[0]
        )

    def _cancel(self, db: sqlite3.Connection, ids: list[int], now: float, detail: Any = None, **context: Any) -> None:
        """Cancel these jobs (held, pending or processing: the caller checked) and their running attempts, each
        with a `cancelled` event, in the running transaction."""
        listed, ids_listed = _encode(ids), self.engine.listed("BIGINT")
        db.execute(
            f"""UPDATE attempts SET status = 'cancelled', finished_at = ? WHERE (job_id, id) IN (SELECT id, attempt
                   FROM jobs WHERE id IN ({ids_listed}) AND status = 'processing')""",
            (now, listed),
        )
        db.execute(
            f"""UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, lease_expires_at = NULL
               WHERE id IN ({ids_listed})""",
            (now, now, listed),
        )
        self._record_all(db, [(job_id, "cancelled") for job_id in ids], detail, **context)

    def retry_job(self, job_id: str) -> dict:
        """Send a failed or cancelled job back to pending with a fresh attempt budget."""
        with self.transaction() as db:
            now = self.clock()
            job = self._job_in(db, job_id, ("failed", "cancelled"), "retried")
            db.execute(
                """UPDATE jobs SET status = 'pending', budget_start = attempts, run_at = ?, updated_at = ?,
                       finished_at = NULL, result = NULL, error = NULL, assignee = NULL,
                       attempt = NULL, progress = NULL
                   WHERE id = ?""",
                (now, now, job["id"]),
            )
            view = self._record(db, "retried", job["id"])
        self._committed(queue_changed=True)
        return view

    def release_job(self, job_id: str) -> dict:
        """Make a held job pending, due now."""
        with self.transaction() as db:
            now = self.clock()
            job = self._job_in(db, job_id, ("held",), "released")
            db.execute(
                "UPDATE jobs SET status = 'pending', run_at = ?, updated_at = ? WHERE id = ?", (now, now, job["id"])
            )
            view = self._record(db, "unheld", job["id"])
        self._committed(queue_changed=True)
        return view

    def await_finish(self, job_id: str, wait: float, gone: Callable[[], bool] = lambda: False) -> tuple[str, str]:
        """A job's view (JSON text) and status once it has finished, or as it is after `wait` seconds,
        at shutdown, or once `gone()` says the client left."""
        deadline = time.monotonic() + wait
        while True:
            seen = self.events_added.generation
            view, status, _ = self.follow_job(job_id)
            remaining = deadline - time.monotonic()
            if status in FINISHED_STATUSES or remaining <= 0 or self.stopping.is_set() or gone():
                return view, status
            self.events_added.wait(seen, min(remaining, _FOREIGN_WRITE_POLL))

    # -- credentials

    def create_token(self, name: str, role: str) -> str:
        """Make a credential; return its secret, which is stored only as a hash."""
        if not _TOKEN_NAME.fullmatch(name):
            raise Invalid("a token name is 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        secret = "lb_" + secrets.token_urlsafe(24)  # 192 random bits
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a token named {name!r} exists; revoke it first", "exists")
            db.execute(
                "INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, _token_hash(secret), self.clock()),
            )
        _log.info("token %s created with role %s", name, role)
        return secret

    def list_tokens(self) -> list[dict]:
        """Every token's name, role and times; never a secret."""
        rows = self.db.execute(
            f"""SELECT {
                self.engine.object(
                    name="name",
                    role="role",
                    created_at=self.engine.time("created_at"),
                    last_used_at=self.engine.time("last_used_at"),
                )
            } FROM tokens ORDER BY name"""
        )
        return [json.loads(row[0]) for row in rows]

    def revoke_token(self, name: str) -> None:
        """Delete a token: it stops working with the next request, and its streams and waits end."""
        with self.transaction() as db:
            if not db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no token named {name!r}")
        _log.info("token %s revoked", name)
        if not self.has_tokens():
            _log.warning("no token is left: a server on loopback is open to anyone on this host until one is made")
        self._revoked()

    def _revoked(self) -> None:
        """Wake every stream and waiting claim, for those of a credential just ended to notice it at once."""
        self.credentials_revoked.fire()
        self.queue_changed.fire()
        self.events_added.fire()

    def has_tokens(self) -> bool:
        """Whether any credential exists (if not, the server is in open mode)."""
        return self.db.execute("SELECT EXISTS (SELECT 1 FROM tokens)").fetchone()[0] == 1

    def find_token(self, secret: str, name: str | None = None) -> sqlite3.Row | None:
        """The token a secret belongs to (and, for Basic, the name it must have), else None; its use is noted."""
        row = self.token_of(secret, name)
        if row is not None:
            self._note_token_use(row)
        return row

    def token_of(self, secret: str, name: str | None = None) -> sqlite3.Row | None:
        """The token a secret belongs to (and, for Basic, the name it must have), else None."""
        digest = _token_hash(secret)
        if name is not None:
            row = self.db.execute(
                "SELECT name, role, hash, last_used_at FROM tokens WHERE name = ?", (name,)
            ).fetchone()
        else:
            # The lookup is by the hash of a 192-bit random secret: its timing tells an attacker nothing.
            row = self.db.execute(
                "SELECT name, role, hash, last_used_at FROM tokens WHERE hash = ?", (digest,)
            ).fetchone()
        if row is None or not hmac.compare_digest(row["hash"], digest):
            return None
        return row

    def _note_token_use(self, token: sqlite3.Row) -> None:
        """Write a token's `last_used_at`, at most once per resolution."""
        if token["last_used_at"] is None or self.clock() - token["last_used_at"] > _TOKEN_USE_RESOLUTION:
            with suppress(StorageError):  # a full disk must not stop reads: the use is noted another time
                with self.transaction() as db:
                    db.execute("UPDATE tokens SET last_used_at = ? WHERE name = ?", (self.clock(), token["name"]))

    # -- browser sessions

    def create_session(self, token: str, lifetime: float) -> str:
        """Open a browser session for a token; return its secret, which is stored only as a hash.

        Expired sessions are deleted here: only logins add sessions, so the
        table holds no more than the logins of one lifetime.
        """
        secret = "lbs_" + secrets.token_urlsafe(32)
        with self.transaction() as db:
            now = self.clock()
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO sessions (hash, token, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (_token_hash(secret), token, now, now + lifetime),
            )
        _log.info("session opened for token %s", token)
        return secret

    def find_session(self, secret: str) -> sqlite3.Row | None:
        """The token (name, role) of an unexpired session, else None; its token's use is noted."""
        row = self.session_of(secret)
        if row is not None:
            self._note_token_use(row)
        return row

    def session_of(self, secret: str) -> sqlite3.Row | None:
        """The token (name, role) of an unexpired session, else None; a revoked token has no sessions."""
        # As with tokens, the lookup is by the hash of a random secret.
        return self.db.execute(
            """SELECT tokens.name, tokens.role, tokens.last_used_at FROM sessions
               JOIN tokens ON tokens.name = sessions.token WHERE sessions.hash = ? AND sessions.expires_at > ?""",
            (_token_hash(secret), self.clock()),
        ).fetchone()

    def end_session(self, secret: str) -> None:
        """Log a browser session out: its streams end too."""
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE hash = ?", (_token_hash(secret),))
        self._revoked()

    # -- job types

    def put_type(self, name: str, settings: dict, by: str = "lazyboss") -> dict:
        """Change a job type's settings: given fields are set (null restores the default), others kept.

        A change (or the type's first configuration) is a new version, by `by`;
        a PUT that changes nothing makes none.
        """
        columns = {key: settings[key] for key in _TYPE_COLUMNS if key in settings}
        with self.transaction() as db:
            now = self.clock()
            before = self.type_settings(db, name)
            db.execute("INSERT INTO types (name, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, now))
            for column, value in columns.items():
                db.execute(f"UPDATE types SET {column} = ? WHERE name = ?", (value, name))
            after = self.type_settings(db, name)
            changed = self._record_version(db, name, before, after, by)
            if changed:
                db.execute("UPDATE types SET updated_at = ? WHERE name = ?", (now, name))
            view = self.get_type(name)
        if "paused" in changed:
            _log.info("type %s %s by %s", name, "paused" if columns["paused"] else "resumed", by)
        elif changed:
            _log.info("type %s changed by %s: %s", name, by, ", ".join(changed))
        if {"paused", "concurrency"} & set(changed):
            self.queue_changed.fire()  # a resumed type's jobs, or those a wider limit lets start, can go out now
        if columns.get("result_schema") is not None:
            self._result_schema_met_at = time.monotonic()
        return view

    def delete_type(self, name: str, by: str = "lazyboss") -> None:
        """Forget a type's settings (a version records it); Conflict while it has jobs."""
        with self.transaction() as db:
            before = self.type_settings(db, name)
            if before is None:
                raise NotFound(f"no job type {name!r} is configured")
            jobs = db.execute("SELECT COALESCE(SUM(number), 0) FROM job_counts WHERE type = ?", (name,)).fetchone()[0]
            if jobs:
                raise Conflict(f"type {name!r} has {jobs} jobs: it can be removed once they are gone", "has_jobs")
            db.execute("DELETE FROM types WHERE name = ?", (name,))
            self._record_version(db, name, before, None, by)
        _log.info("type %s removed by %s", name, by)

    def _record_version(
        self, db: sqlite3.Connection, name: str, before: sqlite3.Row | None, after: sqlite3.Row | None, by: str
    ) -> list[str]:
        """Record a new version of a type's settings if they changed (or the type appeared or went);
        return the names of the settings that changed."""
        old, new = _own_settings(before), _own_settings(after)
        changed = sorted(field for field in set(old) | set(new) if old.get(field) != new.get(field))
        if changed or (before is None) != (after is None):
            db.execute(
                """INSERT INTO type_versions (type, version, settings, changed, changed_by, changed_at)
                   VALUES (?, (SELECT COALESCE(MAX(version), 0) + 1 FROM type_versions WHERE type = ?), ?, ?, ?, ?)""",
                (name, name, None if after is None else _encode(new), _encode(changed), by, self.clock()),
            )
        return changed

    def type_versions(self, name: str) -> list[dict]:
        """Every version of a type's settings, oldest first; NotFound for a type that never had one."""
        rows = self.db.execute(
            f"""SELECT {
                self.engine.object(
                    version="version",
                    changed_by="changed_by",
                    changed_at=self.engine.time("changed_at"),
                    changed=self.engine.json("changed"),
                    settings=self.engine.json("settings"),
                )
            }
                FROM type_versions WHERE type = ? ORDER BY version""",
            (name,),
        ).fetchall()
        if not rows:
            raise NotFound(f"job type {name!r} has no versions: its settings were never changed")
        return [json.loads(row[0]) for row in rows]

    def get_type(self, name: str) -> dict:
        """A job type's effective settings and its jobs counted by status."""
        with self.snapshot() as db:
            row = self.type_settings(db, name)
            counts = dict(
                db.execute("SELECT status, number FROM job_counts WHERE type = ? AND number > 0", (name,)).fetchall()
            )
        if row is None and not counts:
            raise NotFound(f"no job type {name!r}: none configured and no jobs of it")
        return _type_view(name, row, counts)

    def list_types(self, labels: dict[str, str] | None = None) -> list[dict]:
        """Every configured type or type with jobs, with settings and counts; with `labels`, only the
        configured types that carry all of them."""
        matching = (
            f"EXISTS (SELECT 1 FROM {self.engine.members_of('types.labels')} AS label "
            "WHERE label.key = wanted.key AND label.value = wanted.value)"
        )
        with self.snapshot() as db:
            counts = self.count_jobs()
            rows = {
                row["name"]: row
                for row in db.execute(
                    f"""SELECT * FROM types WHERE NOT EXISTS
                        (SELECT 1 FROM {self.engine.members_of("?")} AS wanted WHERE NOT {matching})""",
                    (_encode(labels or {}),),
                )
            }
        names = set(rows) if labels else set(rows) | set(counts)
        return [_type_view(name, rows.get(name), counts.get(name, {})) for name in sorted(names)]

    # -- workers

    def saw_worker(self, name: str) -> None:
        """Note a worker's contact; written to the file by the reaper (see `save_worker_contacts`)."""
        with self._counters_lock:
            self._contacts[name] = self.clock()

    def save_worker_contacts(self) -> None:
        """Write the contacts noted since the last call."""
        with self._counters_lock:
            contacts, self._contacts = self._contacts, {}
        if not contacts:
            return
        try:
            with self.transaction() as db:
                db.executemany(
                    f"""INSERT INTO workers (name, last_seen_at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE
                        SET last_seen_at = {self.engine.greatest}(workers.last_seen_at, excluded.last_seen_at)""",
                    contacts.items(),
                )
        except StorageError:
            with self._counters_lock:  # kept for the next try
                for name, seen in contacts.items():
                    self._contacts[name] = max(seen, self._contacts.get(name, seen))
            raise

    def _last_contacts(self, db: sqlite3.Connection) -> dict[str, float]:
        """Every worker's last contact: the file's, or a newer one not yet written."""
        with self._counters_lock:
            contacts = dict(self._contacts)  # first: a contact being written meanwhile is in one or the other
        seen = {name: last for name, last in db.execute("SELECT name, last_seen_at FROM workers")}
        for name, last in contacts.items():
            seen[name] = max(last, seen.get(name, last))
        return seen

    def _working_on(self, db: sqlite3.Connection, workers: list[str] | None = None) -> dict[str, list]:
        """The running attempts of every worker (or of these), by worker."""
        only = f"AND assignee IN ({self.engine.listed('TEXT')})" if workers is not None else ""
        current: dict[str, list] = {}
        for row in db.execute(
            f"""SELECT assignee, CAST(id AS TEXT), type, CAST(attempt AS TEXT),
                   (SELECT {self.engine.time("started_at")} FROM attempts WHERE job_id = jobs.id AND id = jobs.attempt)
                FROM jobs WHERE status = 'processing' {only} ORDER BY id""",
            () if workers is None else (_encode(workers),),
        ):
            current.setdefault(row[0], []).append({"job": row[1], "type": row[2], "attempt": row[3], "since": row[4]})
        return current

    def list_workers(self) -> list[dict]:
        """Every worker seen: last contact, what it does now, and its attempts by outcome."""
        with self.snapshot() as db:
            seen = self._last_contacts(db)
            outcomes: dict[str, dict[str, int]] = {}
            for worker, status, number in db.execute(
                "SELECT worker, status, COUNT(*) FROM attempts GROUP BY worker, status"
            ):
                outcomes.setdefault(worker, {})[status] = number
            current = self._working_on(db)
        names = sorted(set(seen) | set(outcomes) | set(current))
        return [
            {
                "name": name,
                "last_seen_at": rfc3339(seen.get(name)),
                "working_on": current.get(name, []),
                "done": outcomes.get(name, {}).get("done", 0),
                "failed": outcomes.get(name, {}).get("failed", 0),
                "expired": outcomes.get(name, {}).get("expired", 0),
            }
            for name in names
        ]

    # -- schedules

    def put_schedule(self, name: str, job_type: str, parameters: Any, every: Every) -> dict:
        """Create or replace a schedule; its first tick is the next one from now."""
        with self.transaction() as db:
            now = self.clock()
            schema = _resolve(self.type_settings(db, job_type), "parameters_schema", None)
            self._schema_check(schema, parameters, "parameters", "invalid_parameters")
            db.execute(
                """INSERT INTO schedules (name, type, parameters, every, timezone, next_run_at, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET
                   type = excluded.type, parameters = excluded.parameters, every = excluded.every,
                   timezone = excluded.timezone, next_run_at = excluded.next_run_at,
                   updated_at = excluded.updated_at""",
                (name, job_type, _encode(parameters), every.text, every.zone_name, every.next_after(now), now, now),
            )
            view = self.get_schedule(name)
        _log.info("schedule %s set: %s every %s", name, job_type, every.text)
        return view

    def get_schedule(self, name: str) -> dict:
        """One schedule, with its next run and last job."""
        row = self.db.execute(f"SELECT {self.engine.schedule_json} FROM schedules WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no schedule named {name!r}")
        return json.loads(row[0])

    def list_schedules(self, limit: int = 1 << 62) -> list[dict]:
        """Every schedule (or the first `limit`), by name."""
        rows = self.db.execute(f"SELECT {self.engine.schedule_json} FROM schedules ORDER BY name LIMIT ?", (limit,))
        return [json.loads(row[0]) for row in rows]

    def delete_schedule(self, name: str, keep_pending: bool = False) -> int:
        """Stop a schedule and cancel the jobs it made that are still pending (unless `keep_pending`); running
        and finished ones are kept as they are. Return how many were cancelled."""
        with self.transaction() as db:
            now = self.clock()
            if not db.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no schedule named {name!r}")
            pending = (
                []
                if keep_pending
                else [
                    row[0]
                    for row in db.execute("SELECT id FROM jobs WHERE schedule = ? AND status = 'pending'", (name,))
                ]
            )
            if pending:
                self._cancel(db, pending, now, {"reason": f"schedule {name} was deleted"}, schedule=name)
        _log.info("schedule %s deleted, %d pending jobs of it cancelled", name, len(pending))
        if pending:
            self._committed(queue_changed=False)
        return len(pending)

    def run_schedule(self, name: str) -> dict:
        """Submit a schedule's job now, on demand, besides its ticks."""
        with self.transaction() as db:
            job = self._run_schedule(db, name)
        self._committed(queue_changed=True)
        return job

    def _run_schedule(self, db: sqlite3.Connection, name: str, tick: float | None = None) -> dict:
        """Submit a schedule's job in the running transaction, as the schedule is in it.

        A tick that a job already holds keeps that job as its own: only a file
        from a release that kept ticks and clients' keys in one column has
        such a job (see `_separate_submission_keys`).
        """
        row = db.execute("SELECT type, parameters FROM schedules WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no schedule named {name!r}")
        key = None if tick is None else f"{name}:{tick:.3f}"
        held = None if key is None else db.execute("SELECT id FROM jobs WHERE schedule_tick = ?", (key,)).fetchone()
        if held is not None:
            job_id = held[0]
            self._log_committed(logging.INFO, "schedule %s: job %s already holds its tick %s", name, job_id, key)
        else:
            spec = JobSpec(type=row["type"], parameters=json.loads(row["parameters"]))
            (job_id,) = self._insert_jobs(db, [spec], schedule=name, tick=key)
        db.execute("UPDATE schedules SET last_run_at = ?, last_job_id = ? WHERE name = ?", (self.clock(), job_id, name))
        return json.loads(db.execute(f"SELECT {self.engine.job_json} FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])

    def fire_due_schedules(self) -> int:
        """Submit one job for each schedule whose tick has come, and move it to its next tick; return how many
        ticks came (skipped ones too).

        Each schedule is read, fired and moved in one transaction, so a tick
        makes exactly one job however many servers share the file, and a
        schedule deleted or changed before that transaction makes none. A
        schedule that missed several ticks (the server was down) gets one
        job, for the first missed tick, then waits for the next future one.
        A tick that fails (its type's schema refuses the parameters, a cron
        line's time zone is unknown here) is skipped: see `_skip_tick`. Each
        schedule fires at most once in a call, so none can keep it going.
        """
        handled: list[str] = []
        while True:
            due = None
            try:
                with self.transaction() as db:
                    now = self.clock()
                    due = db.execute(
                        f"""SELECT name, next_run_at, every, timezone FROM schedules
                           WHERE next_run_at <= ? AND name NOT IN ({self.engine.listed("TEXT")})
                           ORDER BY next_run_at LIMIT 1""",
                        (now, _encode(handled)),
                    ).fetchone()
                    if due is None:
                        return len(handled)
                    handled.append(due["name"])
                    following = parse_every(due["every"], due["timezone"], check_zone=False).next_after(now)
                    self._run_schedule(db, due["name"], due["next_run_at"])
                    db.execute(
                        "UPDATE schedules SET next_run_at = ?, last_error = NULL WHERE name = ?",
                        (following, due["name"]),
                    )
            except StorageError:
                raise
            except Exception as error:  # this schedule's trouble (the read of the next one is no schedule's)
                if due is None:
                    raise
                self._skip_tick(due["name"], error)
                continue
            self._committed(queue_changed=True)

    _SCHEDULE_RETRY = 60.0  # seconds until a schedule whose next tick cannot be told is tried again

    def _skip_tick(self, name: str, error: Exception) -> None:
        """Move a schedule whose tick failed on to its next tick (or try again in a minute when that cannot be
        told), keeping why in its `last_error` for GET /schedules. Logged when the reason is new, not each tick."""
        detail = error.detail if isinstance(error, LazybossError) else f"{type(error).__name__}: {error}"
        with self.transaction() as db:
            now = self.clock()
            row = db.execute(
                f"SELECT next_run_at, every, timezone, {self.engine.member('last_error', 'detail')} AS known "
                "FROM schedules WHERE name = ? AND next_run_at <= ?",
                (name, now),
            ).fetchone()
            if row is None:
                return
            try:
                following = parse_every(row["every"], row["timezone"], check_zone=False).next_after(now)
            except ValueError:
                following = now + self._SCHEDULE_RETRY
            failure = _encode({"tick": rfc3339(row["next_run_at"]), "detail": detail})
            db.execute(
                "UPDATE schedules SET next_run_at = ?, last_error = ? WHERE name = ?", (following, failure, name)
            )
        if row["known"] != detail:
            _log.warning("schedule %s: tick %s skipped: %s", name, rfc3339(row["next_run_at"]), detail)

    def seconds_until_next_schedule(self) -> float:
        """Seconds until the next schedule's tick (infinity without schedules)."""
        row = self.db.execute("SELECT MIN(next_run_at) FROM schedules").fetchone()
        return float("inf") if row[0] is None else max(0.0, row[0] - self.clock())

    # -- the status page: capped lists, so a big queue costs no more than a small one

    def jobs_in_flight(self, limit: int) -> list[dict]:
        """The first `limit` processing jobs, oldest first, each with its attempt's `started_at`."""
        rows = self.db.execute(
            f"""SELECT {self.engine.running_job_json} FROM jobs WHERE status = 'processing' ORDER BY id LIMIT ?""",
            (limit,),
        )
        return [json.loads(row[0]) for row in rows]

    def latest_failures(self, limit: int) -> list[dict]:
        """The `limit` newest failed jobs (by id, which their index gives in order)."""
        rows = self.db.execute(
            f"SELECT {self.engine.job_json} FROM jobs WHERE status = 'failed' ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [json.loads(row[0]) for row in rows]

    def recent_workers(self, limit: int) -> tuple[list[dict], int]:
        """The `limit` workers heard from last, with what they do now; and how many workers there are."""
        with self.snapshot() as db:
            seen = self._last_contacts(db)
            names = sorted(seen, key=lambda name: (-seen[name], name))[:limit]
            current = self._working_on(db, names)
        workers = [
            {"name": name, "last_seen_at": rfc3339(seen[name]), "working_on": current.get(name, [])} for name in names
        ]
        return workers, len(seen)

    def page_version(self) -> tuple:
        """What the status page shows changes when this does (but for the clock); cheap enough to ask often.
        Deleted jobs leave no event: the sum of the counts tells them."""
        with self._counters_lock:
            newest_contact = max(self._contacts.values(), default=None)
        settings = self.db.execute(
            """SELECT (SELECT MAX(updated_at) FROM types), (SELECT COUNT(*) FROM schedules),
                   (SELECT MAX(updated_at) FROM schedules), (SELECT MIN(next_run_at) FROM schedules),
                   (SELECT MAX(last_run_at) FROM schedules), (SELECT MAX(last_seen_at) FROM workers),
                   (SELECT SUM(number) FROM job_counts)"""
        ).fetchone()
        return (self.last_event_id(), *settings, newest_contact)

    def paused_types(self) -> list[str]:
        """The names of the paused job types."""
        return [row[0] for row in self.db.execute("SELECT name FROM types WHERE paused <> 0 ORDER BY name")]

    def concurrency_limits(self) -> dict[str, int]:
        """The concurrency limit of each type that has one."""
        return dict(self.db.execute("SELECT name, concurrency FROM types WHERE concurrency IS NOT NULL ORDER BY name"))

    # -- housekeeping

    def delete_finished_jobs(self, retain: float, batch: int = 500) -> int:
        """Delete one batch of jobs finished longer ago than their type's retention (else `retain`)."""
        with self.transaction() as db:
            now = self.clock()
            shortest = db.execute("SELECT MIN(retain) FROM types").fetchone()[0]
            old = db.execute(
                """SELECT jobs.id, jobs.submission FROM jobs LEFT JOIN types ON types.name = jobs.type
                   WHERE jobs.finished_at < ? AND jobs.finished_at < ? - COALESCE(types.retain, ?)
                   ORDER BY jobs.finished_at LIMIT ?""",
                (now - min(retain, shortest if shortest is not None else retain), now, retain, batch),
            ).fetchall()
            self._delete_jobs(db, [row[0] for row in old])
        return len(old)

    def purge_jobs(self, types: list[str], statuses: list[str], older_than: float | None = None) -> int:
        """Delete the jobs of these types in these statuses (never running ones) with their attempts, logs and
        events; return how many. Finished jobs count their age from when they finished, the others from when
        they were submitted.

        A batch is a transaction of its own, so other writes wait for one batch at most, and only jobs that
        were there when the purge began are deleted: a queue that keeps filling cannot make it go on forever.
        """
        if "processing" in statuses:
            raise Invalid("running jobs are never purged: cancel them, then purge status=cancelled")
        newest = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
        deleted = 0
        while True:
            with self.transaction() as db:
                now = self.clock()
                ids = [
                    row[0]
                    for row in db.execute(
                        f"""SELECT id FROM jobs WHERE status IN ({self.engine.listed("TEXT")})
                               AND type IN ({self.engine.listed("TEXT")}) AND id <= ?
                               AND COALESCE(finished_at, created_at) <= ? LIMIT ?""",
                        (_encode(statuses), _encode(types), newest, now - (older_than or 0), _PURGE_BATCH),
                    )
                ]
                self._delete_jobs(db, ids)
            deleted += len(ids)
            if len(ids) < _PURGE_BATCH:
                break
        if deleted:
            self.jobs_purged.fire()
            self.events_added.fire()  # wakes the streams, which then look whether their job is still there
        _log.info("purged %d jobs: type=%s status=%s", deleted, ",".join(types), ",".join(statuses))
        return deleted

    def _delete_jobs(self, db: sqlite3.Connection, ids: list[int]) -> None:
        """Delete these jobs, their attempts and progress (by cascade) and their events, in the running
        transaction; an idempotency key is forgotten with the last job of its submission."""
        listed, ids_listed = _encode(ids), self.engine.listed("BIGINT")
        submissions = db.execute(
            f"SELECT DISTINCT submission FROM jobs WHERE id IN ({ids_listed}) AND submission IS NOT NULL",
            (listed,),
        ).fetchall()
        db.execute(f"DELETE FROM events WHERE job_id IN ({ids_listed})", (listed,))
        db.execute(f"DELETE FROM jobs WHERE id IN ({ids_listed})", (listed,))
        db.executemany(
            "DELETE FROM submissions WHERE id = ? AND NOT EXISTS (SELECT 1 FROM jobs WHERE submission = ?)",
            [(submission, submission) for (submission,) in submissions],
        )

    def count_jobs(self) -> dict[str, dict[str, int]]:
        """Job counts by type and status (kept by triggers: nothing is counted here)."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.db.execute("SELECT type, status, number FROM job_counts WHERE number > 0"):
            counts.setdefault(row[0], {})[row[1]] = row[2]
        return counts

    def oldest_pending_ages(self) -> dict[str, float]:
        """Seconds the longest-waiting due job of each type has been due."""
        now = self.clock()
        rows = self.db.execute(
            "SELECT type, MIN(run_at) FROM jobs WHERE status = 'pending' AND run_at <= ? GROUP BY type", (now,)
        )
        return {row[0]: now - row[1] for row in rows}

    def queue_depth(self) -> dict[str, int]:
        """How many jobs are pending and processing."""
        rows = self.db.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('pending', 'processing') GROUP BY status"
        )
        return {"pending": 0, "processing": 0, **dict(rows.fetchall())}

    def file_sizes(self) -> dict[str, int]:
        """Bytes on disk of the database's files (none for a database server)."""
        return self.engine.file_sizes()

    def disk_free(self) -> int | None:
        """Bytes free for lazyboss where the database is (None if it cannot be told, as for a server)."""
        return self.engine.disk_free()

    def checkpoint(self) -> bool:
        """Fold the WAL into the database file, truncate it, and give free pages back; False if readers held it."""
        self.check_file()  # never fold this WAL into another file put in the database's place
        with self.database_errors():
            return self.engine.checkpoint(self.db)

    # -- copying to another database

    def copy_into(self, target: Store, batch: int = 100) -> dict[str, int]:
        """Copy everything this database holds into `target`, an empty database (of either engine), in one
        transaction of the target; return how many rows of each table went.

        The target's triggers count the jobs and index their claims again as
        they go in; its ids go on after the copied ones (after the last ever
        given, for jobs and events: an id is never given twice).
        """
        with target.transaction() as out, self.snapshot() as db:
            target.engine.wait_within(out)  # each waits on the other: a large log takes a while to go through
            self.engine.wait_within(db)
            for table in _COPIED_TABLES:
                if out.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                    raise Conflict(f"the target database is not empty (it holds {table}): copy into a new one")
            copied = {}
            for table in _COPIED_TABLES:
                wanted = {column[0] for column in out.execute(f"SELECT * FROM {table} LIMIT 0").description}
                source = db.execute(f"SELECT * FROM {table} LIMIT 0").description
                columns = [column[0] for column in source if column[0] in wanted]
                listed = ", ".join(columns)
                insert = _insert_rows(table, tuple(columns), 1)
                # An event's job goes without the nulls SQLite keeps in place of its large members: PostgreSQL
                # reads it as it is, SQLite takes them out when it reads it anyway.
                small = columns.index("job") if table == "events" else None
                rows = self.engine.read_in_batches(db, f"SELECT {listed} FROM {table}")
                copied[table] = 0
                while chunk := rows.fetchmany(batch):
                    values = [list(row) for row in chunk]
                    for row in values if small is not None else ():
                        job = json.loads(row[small])
                        row[small] = _encode({key: job[key] for key in job if key not in _EVENT_CHANGES})
                    out.executemany(insert, values)
                    copied[table] += len(chunk)
                rows.close()
            last = self.engine.last_ids(db)
            for table in last:
                last[table] = max(last[table], db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])
            target.engine.continue_ids(out, last)
        return copied


class _EventFeed:
    """The newest events of the log, read once for every stream that follows it.

    A stream asks for the events after its cursor. When the feed's window
    holds all of them, the stream takes them from there, filtered to what it
    follows; the first stream to find the log grown since the window was read
    reads what is new, once, for all (others wait for it, then take theirs
    from the window). A stream further behind than the window (a replay from
    Last-Event-ID, or one that fell behind) reads the log itself until it
    reaches the window. The window keeps the newest WINDOW_EVENTS events and
    about WINDOW_BYTES of them.
    """

    WINDOW_EVENTS = 2000
    WINDOW_BYTES = 4 * _WRITE_BUDGET
    READ_LIMIT = 500  # events read at a time, as `Store.events_after`

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._events: list[_Event] = []
        self._ids: list[int] = []  # the events' ids, for bisect
        self._bytes = 0
        self._start: int | None = None  # the window holds every event after this id (None: not read yet)
        self._read_generation = -1  # `events_added` when the window was last read
        self._read_at = 0.0

    def events_after(self, after: int, jobs: list[str], types: list[str]) -> list[_Event]:
        """As `Store.events_after` (at most READ_LIMIT events and about _WRITE_BUDGET bytes), mostly
        without reading the database."""
        with self._lock:
            self._catch_up()
            newer = None
            if self._start is not None and after >= self._start:
                newer = self._events[bisect.bisect_right(self._ids, after) :]
        if newer is None:
            return self.store.events_after(after, jobs, types, self.READ_LIMIT)
        job_ids = {_parse_id(job, "job") for job in jobs}
        taken, total = [], 0
        for event in newer:
            if (job_ids and event.job_id not in job_ids) or (types and event.type not in types):
                continue
            taken.append(event)
            total += event.size
            if len(taken) == self.READ_LIMIT or total >= _WRITE_BUDGET:
                break
        return taken

    def _catch_up(self) -> None:
        """Read what the log gained since the last read, if this process added some or another may have
        (a look at least every `_FOREIGN_WRITE_POLL`); called with the lock held."""
        generation, now = self.store.events_added.generation, time.monotonic()
        if generation == self._read_generation and now - self._read_at < _FOREIGN_WRITE_POLL:
            return
        self._read_generation, self._read_at = generation, now
        if self._start is None:
            self._start = self.store.last_event_id()
            return
        fresh = self.store.events_after(self._ids[-1] if self._ids else self._start, [], [], self.READ_LIMIT)
        fresh_bytes = sum(event.size for event in fresh)
        if len(fresh) == self.READ_LIMIT or fresh_bytes >= _WRITE_BUDGET:
            self._read_generation = -1  # more may wait: the next call reads on
        self._events += fresh
        self._ids += [event.id for event in fresh]
        self._bytes += fresh_bytes
        drop = max(0, len(self._events) - self.WINDOW_EVENTS)
        dropped_bytes = sum(event.size for event in self._events[:drop])
        while self._bytes - dropped_bytes > self.WINDOW_BYTES:
            dropped_bytes += self._events[drop].size
            drop += 1
        if drop:
            self._start = self._ids[drop - 1]
            del self._events[:drop], self._ids[:drop]
            self._bytes -= dropped_bytes


# --------------------------------------------------------------------------
# Reaper and systemd
# --------------------------------------------------------------------------


class SystemdNotifier:
    """systemd's notify protocol (sd_notify) over $NOTIFY_SOCKET; does nothing without it."""

    def __init__(self, environ: dict | None = None):
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET", "")
        # An address starting with @ lives in the abstract namespace.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if path else None
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        meant_for_us = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # Ping twice per watchdog period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() and meant_for_us else None

    @property
    def active(self) -> bool:
        """Whether a service manager listens."""
        return self._socket is not None

    def notify(self, *assignments: str) -> None:
        """Send `READY=1`, `STATUS=…` and the like; a failure is logged, never raised."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as error:
            _log.warning("could not notify systemd: %s", error)


def _boot_id() -> str:
    """Which boot of which host the monotonic clock counts from: the same for every process of one boot
    on Linux; elsewhere, this process's."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return f"process {os.getpid()} on {socket.gethostname()}"


class Reaper(threading.Thread):
    """Background housekeeping: expire silent attempts, fire schedules, prune old jobs, checkpoint the WAL.

    Each task of a round stands alone: one that fails (a schedule, a bug)
    neither stops the others nor the round, and is logged once per distinct
    error, not every round. After each round it pets systemd's watchdog (if
    one is set), so only a reaper that is stuck gets the service restarted.
    """

    CHECKPOINT_EVERY = 60.0
    STATUS_EVERY = 5.0
    MIN_PAUSE = 0.01  # between rounds, whatever a schedule says: the reaper never spins

    def __init__(
        self,
        store: Store,
        interval: float = 1.0,
        retain: float = 7 * 86400,
        notifier: SystemdNotifier | None = None,
    ):
        super().__init__(name="lazyboss-reaper", daemon=True)
        self.store = store
        self.interval = interval
        self.retain = retain
        self.notifier = notifier or SystemdNotifier({})
        self.last_run: float | None = None
        self._halt = threading.Event()
        self._last_checkpoint = time.monotonic()
        self._last_notified = float("-inf")
        self._failing: dict[str, str] = {}  # task -> the error it failed with last round
        self.boot = _boot_id()
        self._round_ended: float | None = None  # time.monotonic(): a wall clock that jumps is no sign of a stuck reaper

    def run(self) -> None:
        """Work every `interval` seconds (sooner when a schedule is due, but never without a pause) until stopped."""
        while not self._halt.is_set():
            self.run_once()
            pause = self.interval
            if "schedules" not in self._failing:
                with suppress(self.store.engine.errors, StorageError):
                    pause = min(pause, self.store.seconds_until_next_schedule())
            self._halt.wait(max(self.MIN_PAUSE, pause))

    def run_once(self) -> None:
        """One round of housekeeping; errors are logged, not raised.

        While the file takes no writes (full, read-only, gone) a round only
        checks whether it does again; it still counts as a round, so the
        watchdog does not restart a server that is waiting for disk space.
        """
        if self._task("recovery", self.store.recover):
            self._task("clock", self.keep_leases_through_clock_jumps)
            self._task("expiry", lambda: self._repeat(self.store.expire_stale_attempts))
            self._task("reservations", lambda: self._repeat(self.store.open_lapsed_reservations))
            self._task("schedules", self.store.fire_due_schedules)
            self._task("worker contacts", self.store.save_worker_contacts)
            self._task("retention", self.delete_old_jobs)
            if time.monotonic() - self._last_checkpoint >= self.CHECKPOINT_EVERY:
                if self._task("checkpoint", self.store.checkpoint):
                    self._last_checkpoint = time.monotonic()
        self.last_run, self._round_ended = time.time(), time.monotonic()
        self._task("systemd status", self.report_health)

    def _task(self, name: str, work: Callable[[], Any]) -> bool:
        """Run one task of a round; whether it went well. Its failure is logged when it begins or its error
        changes, and its recovery once."""
        try:
            work()
        except StorageError:
            return False  # the store logged it when it began, and /health reports it until `recover` sees it over
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
            if self._failing.get(name) != why:
                _log.exception("reaper: %s failed; the other tasks go on, it is tried again each round", name)
            self._failing[name] = why
            return False
        if self._failing.pop(name, None) is not None:
            _log.warning("reaper: %s works again", name)
        return True

    def keep_leases_through_clock_jumps(self) -> None:
        """Leases keep the time they give when the wall clock jumps (see the store's method of this name)."""
        self.store.keep_leases_through_clock_jumps(time.time(), time.monotonic(), self.boot)

    def _repeat(self, batch: Callable[[], int]) -> None:
        """Run a batch until it finds nothing more to do (or the reaper is stopped)."""
        while batch() and not self._halt.is_set():
            pass

    def delete_old_jobs(self) -> None:
        """Delete finished jobs past retention, a batch at a time, within half a round."""
        deadline = time.monotonic() + max(0.05, self.interval / 2)
        while self.store.delete_finished_jobs(self.retain) and time.monotonic() < deadline and not self._halt.is_set():
            pass

    def report_health(self) -> None:
        """Pet the watchdog and say how full the queue is, no more often than needed."""
        every = min(self.notifier.watchdog_interval or self.STATUS_EVERY, self.STATUS_EVERY)
        if not self.notifier.active or time.monotonic() - self._last_notified < every:
            return
        self._last_notified = time.monotonic()
        try:
            depth = self.store.queue_depth()
            status = f"STATUS={depth['pending']} pending, {depth['processing']} processing"
        except (self.store.engine.errors, StorageError):  # the watchdog is petted all the same: not stuck
            status = "STATUS=the database cannot be read"
        trouble = self.store.trouble()
        if trouble is not None:
            status += f"; {trouble.code}: {trouble.detail}"
        self.notifier.notify(*(["WATCHDOG=1"] if self.notifier.watchdog_interval else []), status)

    def start(self) -> None:
        self._round_ended = time.monotonic()
        super().start()

    def healthy(self) -> bool:
        """Whether a round finished recently, or the thread started recently: a server just started is
        healthy while its first round runs, not 503 to the first `curl /health`."""
        return self._round_ended is not None and time.monotonic() - self._round_ended < max(10.0, 5 * self.interval)

    def stop(self) -> None:
        """Ask the thread to end after its current round."""
        self._halt.set()


_SD_LISTEN_FDS_START = 3


def _activated_socket(environ: dict | None = None) -> socket.socket | None:
    """The listening socket systemd handed over (socket activation, LISTEN_FDS), if any."""
    environ = os.environ if environ is None else environ
    if environ.get("LISTEN_PID") != str(os.getpid()) or environ.get("LISTEN_FDS", "0") in ("", "0"):
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the children we might start
    return socket.socket(fileno=_SD_LISTEN_FDS_START)


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

# The counters of /metrics and their help (Store._count tallies them).
_COUNTERS = {
    "jobs_submitted": "Jobs submitted.",
    "jobs_claimed": "Jobs handed to a worker (one per attempt).",
    "jobs_completed": "Jobs done.",
    "jobs_failed": "Jobs failed for good.",
    "jobs_cancelled": "Jobs cancelled.",
    "jobs_retried": "Jobs sent back to pending by hand.",
    "jobs_released": "Held jobs released: made pending.",
    "attempts_failed": "Attempts that ended with an error report.",
    "attempts_expired": "Attempts whose lease ran out.",
    "claims_released": "Claims put back at once: the worker had left before the answer could be written.",
}
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def _label_text(labels: dict) -> str:
    """A Prometheus label set, `{a="x",b="y"}`, its values escaped."""
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{str(value).translate(_LABEL_ESCAPES)}"' for key, value in labels.items()) + "}"


class _Exposition:
    """Prometheus' text exposition format, built a metric family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        """HELP and TYPE lines, then one line per sample."""
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.samples(name, samples)

    def samples(self, name: str, samples: list[tuple[dict, float]]) -> None:
        """Sample lines of the current family."""
        self.lines += [f"{name}{_label_text(labels)} {value!r}" for labels, value in samples]

    def text(self) -> str:
        """The whole exposition."""
        return "\n".join(self.lines) + "\n"


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


class _Histogram:
    """Request durations by (method, route, status class), in cumulative buckets."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
    LABELS = ("method", "route", "code")

    def __init__(self, name: str, help_text: str):
        self.name = name
        self.help_text = help_text
        # labels -> [count in each bucket alone (the last: above every bound)..., sum]; cumulated when exposed
        self._series: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def observe(self, labels: tuple, seconds: float) -> None:
        """Count one observation."""
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [0] * (len(self.BUCKETS) + 1) + [0.0]
            series[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            series[-1] += seconds

    def expose(self, exposition: _Exposition) -> None:
        """Add the histogram's family to an exposition."""
        exposition.family(self.name, "histogram", self.help_text, [])
        with self._lock:
            snapshot = sorted((labels, list(series)) for labels, series in self._series.items())
        for labels, series in snapshot:
            named = dict(zip(self.LABELS, labels))
            bounds = [f"{bound:g}" for bound in self.BUCKETS] + ["+Inf"]
            counts = list(itertools.accumulate(series[:-1]))
            exposition.samples(f"{self.name}_bucket", [({**named, "le": le}, n) for le, n in zip(bounds, counts)])
            exposition.samples(f"{self.name}_count", [(named, counts[-1])])
            exposition.samples(f"{self.name}_sum", [(named, series[-1])])


# --------------------------------------------------------------------------
# Status page
# --------------------------------------------------------------------------

# The page's only style sheet and its only script. They live here, inline, so that lazyboss stays one
# file with no build step; the Content-Security-Policy below lets nothing else run.
_PAGE_STYLE = """
:root {
  color-scheme: light dark;
  --ink: #1d2430; --muted: #5f6b7a; --line: #dfe3ea; --card: #ffffff; --page: #f3f5f8; --accent: #2f6fde;
  --held: #8a4fbf; --pending: #946f00; --processing: #2f6fde; --done: #1f8a4c; --failed: #c23434;
  --cancelled: #6b7380;
}
@media (prefers-color-scheme: dark) {
  :root {
    --ink: #e6e9ef; --muted: #9aa4b2; --line: #2f3642; --card: #1b2029; --page: #12161d; --accent: #6ea0ff;
    --held: #c39bef; --pending: #e0b84a; --processing: #6ea0ff; --done: #4cc784; --failed: #ff7070;
    --cancelled: #9aa4b2;
  }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--page); }
a { color: var(--accent); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .4rem 1rem; padding: .6rem 1rem;
         background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.15rem; margin: 0; }
header .who { margin-left: auto; display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
header form { margin: 0; }
.muted, h2 small { color: var(--muted); font-weight: normal; font-size: .85rem; }
#live::before { content: "\\25CF  "; }
#live.live { color: var(--done); }
#live.reconnecting, #live.offline { color: var(--failed); }
main { display: grid; gap: 1rem; padding: 1rem; max-width: 1400px; margin: 0 auto; }
#overview { display: grid; gap: 1rem; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem;
        min-width: 0; }
.card.wide { grid-column: 1 / -1; }
h2 { font-size: 1rem; margin: 0 0 .5rem; }
h3 { font-size: .9rem; margin: .75rem 0 .25rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap;
         vertical-align: middle; }
th { color: var(--muted); font-size: .75rem; font-weight: 600; text-transform: uppercase; letter-spacing: .03em; }
tr:last-child td { border-bottom: 0; }
tfoot td { font-weight: 600; border-top: 1px solid var(--line); }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.zero { color: var(--muted); }
.text { white-space: normal; overflow-wrap: anywhere; }
#paused { margin: .5rem 0 0; }
.held { color: var(--held); }
.pending { color: var(--pending); } .processing { color: var(--processing); } .done { color: var(--done); }
.failed { color: var(--failed); } .cancelled { color: var(--cancelled); }
.badge { font-size: .75rem; padding: 0 .45rem; border: 1px solid currentColor; border-radius: 999px;
         color: var(--pending); margin-left: .3rem; }
.badge.slots { color: var(--processing); }
progress { width: 7rem; height: .7rem; vertical-align: middle; accent-color: var(--accent); }
button { font: inherit; font-size: .85rem; padding: .1rem .6rem; border-radius: 6px; cursor: pointer;
         border: 1px solid var(--line); background: var(--page); color: var(--ink); }
button.danger { color: var(--failed); border-color: currentColor; }
button:disabled { opacity: .5; }
html:not(.js) .js-only { display: none; }
#answer { position: sticky; top: 0; z-index: 1; padding: .5rem 1rem; border-radius: 8px; border: 1px solid; }
#answer:empty { display: none; }
#answer.ok { color: var(--done); background: var(--card); }
#answer.refused { color: var(--failed); background: var(--card); }
#job:empty { display: none; }
#job h2 { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
#job h2 .close { margin-left: auto; font-weight: normal; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
pre { margin: .25rem 0; padding: .5rem; max-height: 22rem; overflow: auto; white-space: pre-wrap;
      overflow-wrap: anywhere; background: var(--page); border: 1px solid var(--line); border-radius: 6px; }
pre:empty::before { content: "(nothing yet)"; color: var(--muted); }
.login { max-width: 24rem; margin: 12vh auto; }
.login input { width: 100%; font: inherit; padding: .4rem; margin: .25rem 0 .75rem; }
.login .refused { color: var(--failed); }
@media (max-width: 60rem) {
  #overview { grid-template-columns: minmax(0, 1fr); }
}
@media (max-width: 40rem) {
  main { padding: .5rem; gap: .5rem; }
  #overview { gap: .5rem; }
  header .who { margin-left: 0; }
  .card { padding: .6rem; }
  th, td { padding: .25rem .3rem; }
  th { letter-spacing: 0; }
}
"""

_PAGE_SCRIPT = """
"use strict";
// The status page, live. Every event on /events, and a look every LOOK_EVERY_MS, fetch the page
// again (at most every REFRESH_GAP_MS; the server answers 304 while nothing changed) and swap
// its parts in place. Log chunks of the job on display are appended the moment they arrive.
// Admins' buttons ask first, then show the server's answer.
document.documentElement.classList.add("js");
const REFRESH_GAP_MS = 400;
const LOOK_EVERY_MS = 800;  // for what makes no job event (pausing, schedules, contacts): within a second too
const csrfToken = document.querySelector("meta[name=csrf-token]").content;
let clockSkew = Date.parse(document.body.dataset.now) - Date.now();  // server time minus ours

function spoken(seconds) {  // the same words as the server's _spoken
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 90) return seconds + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  if (seconds < 129600) return Math.round(seconds / 3600) + " h";
  return Math.round(seconds / 86400) + " d";
}

function tickTimes() {
  const now = Date.now() + clockSkew;
  for (const time of document.querySelectorAll("time[data-ago], time[data-for]")) {
    const elapsed = spoken((now - Date.parse(time.dateTime)) / 1000);
    time.textContent = "ago" in time.dataset ? elapsed + " ago" : elapsed;
  }
  for (const time of document.querySelectorAll("time[data-until]")) {
    const seconds = (Date.parse(time.dateTime) - now) / 1000;
    time.textContent = seconds >= 0.5 ? "in " + spoken(seconds) : "due";
  }
}

function setLive(state, text) {
  const live = document.getElementById("live");
  live.className = state;
  live.textContent = text;
}

// -- fetching the page again and swapping what changed

let refreshTimer = null, refreshing = false, refreshAgain = false, lastRefresh = 0, showJob = false;

function refreshSoon() {
  if (refreshing) {
    refreshAgain = true;
  } else if (refreshTimer === null) {
    refreshTimer = setTimeout(refresh, Math.max(0, lastRefresh + REFRESH_GAP_MS - Date.now()));
  }
}

async function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  lastRefresh = Date.now();
  try {
    await load();
  } catch (error) {
    setLive("offline", "server unreachable");
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refreshSoon();
    }
  }
}

async function load() {
  const answer = await fetch(location.pathname + location.search,
    {headers: {"Accept": "text/html", "If-None-Match": document.body.dataset.tag}});
  if (answer.status === 304) return;
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  if (!page.getElementById("overview")) {  // the session ended: show the login form
    location.reload();
    return;
  }
  document.body.dataset.tag = page.body.dataset.tag;
  clockSkew = Date.parse(page.body.dataset.now) - Date.now();
  document.getElementById("overview").replaceWith(document.adoptNode(page.getElementById("overview")));
  swapJob(document.adoptNode(page.getElementById("job")));
  tickTimes();
  if (showJob) document.getElementById("job").scrollIntoView();
  showJob = false;
}

function swapJob(fresh) {
  const old = document.getElementById("job");
  const oldLog = old.querySelector("#job-log"), freshLog = fresh.querySelector("#job-log");
  const sameLog = oldLog && freshLog && old.dataset.job === fresh.dataset.job &&
    oldLog.dataset.attempt === freshLog.dataset.attempt;
  const atBottom = oldLog && oldLog.scrollTop + oldLog.clientHeight >= oldLog.scrollHeight - 4;
  if (sameLog && Number(freshLog.dataset.logId) < Number(oldLog.dataset.logId)) {
    freshLog.replaceWith(oldLog);  // the stream brought newer chunks than this page has: keep them
  }
  old.replaceWith(fresh);
  const log = fresh.querySelector("#job-log");
  if (log && (atBottom || !sameLog)) log.scrollTop = log.scrollHeight;
}

// -- the event stream

function showEvent(event) {  // log chunks of the job on display, at once
  const job = event.job;
  const log = document.getElementById("job-log");
  if (event.event !== "progress" || !log || document.getElementById("job").dataset.job !== job.id ||
      log.dataset.attempt !== event.detail.attempt) return;
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  for (const item of event.detail.events) {
    if (item.id <= Number(log.dataset.logId)) continue;
    if (item.event === "log_chunk") log.append(item.data);
    log.dataset.logId = item.id;
  }
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function connect() {
  // From the newest event the page has seen. When EventSource reconnects by itself it sends
  // Last-Event-ID, which the server prefers to this parameter.
  const stream = new EventSource("/events?last_event_id=" + encodeURIComponent(document.body.dataset.lastEvent));
  stream.onopen = () => setLive("live", "live");
  stream.onmessage = (message) => {
    document.body.dataset.lastEvent = message.lastEventId;
    showEvent(JSON.parse(message.data));
    refreshSoon();
  };
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) {  // refused, such as after a logout: try again later
      setLive("offline", "disconnected");
      setTimeout(connect, 5000);
    } else {
      setLive("reconnecting", "reconnecting");
    }
  };
}

// -- clicks: job details, and admins' actions

function summary(status, text) {
  let body;
  try { body = JSON.parse(text); } catch (error) { return status + " " + text.slice(0, 300); }
  if (body.error) return status + " " + body.error + ": " + body.detail;
  if (body.type && "paused" in body) return status + ": type " + body.type + (body.paused ? " is paused" : " runs");
  if (body.id && body.status) return status + ": job " + body.id + " is " + body.status;
  return status + " " + text.slice(0, 300);
}

async function act(button) {
  const label = button.dataset.label;
  if (!window.confirm(label + "?")) return;
  const answerBox = document.getElementById("answer");
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.url, {
      method: button.dataset.method,
      headers: {"X-CSRF-Token": csrfToken, "Content-Type": "application/json", "Accept": "application/json"},
      body: button.dataset.body || null,
    });
    answerBox.className = answer.ok ? "ok" : "refused";
    answerBox.textContent = label + ": " + summary(answer.status, await answer.text());
  } catch (error) {
    answerBox.className = "refused";
    answerBox.textContent = label + ": no answer (" + error.message + ")";
  }
  button.disabled = false;
  refreshSoon();
}

document.addEventListener("click", (click) => {
  const link = click.target.closest("a[data-nav]");
  if (link && click.button === 0 && !click.ctrlKey && !click.metaKey && !click.shiftKey) {
    click.preventDefault();
    history.pushState(null, "", link.href);
    showJob = link.dataset.nav === "job";
    refresh();
    return;
  }
  const button = click.target.closest("button[data-url]");
  if (button) act(button);
});
window.addEventListener("popstate", refresh);

setInterval(tickTimes, 1000);
setInterval(refreshSoon, LOOK_EVERY_MS);
setLive("reconnecting", "connecting");
connect();
"""


def _csp_source(text: str) -> str:
    """A Content-Security-Policy source that allows exactly this inline text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_PAGE_REFRESH = 5  # seconds between reloads of the page when JavaScript is off
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # Only the style and script above: text that came with a job can never run as code.
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_source(_PAGE_SCRIPT)}; style-src {_csp_source(_PAGE_STYLE)}; "
        "connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",  # no clicking an admin's buttons through someone else's frame
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the login form's Origin "null"
}
# How much the page shows at most: it never loads all jobs, and counts come from the database.
_PAGE_IN_FLIGHT = 50
_PAGE_FAILURES = 10
_PAGE_WORKERS = 20
_PAGE_SCHEDULES = 20
_PAGE_TEXT = 16 * 1024  # characters of parameters, result or error
_PAGE_LOG = 64 * 1024  # the last characters of an attempt's log


def _gather_overview(store: Store) -> dict:
    """What the status page shows, read from the store."""
    # One snapshot: the page is the file as of its last event, and what changes later comes over the stream.
    with store.snapshot():
        workers, worker_count = store.recent_workers(_PAGE_WORKERS)
        return {
            "now": store.clock(),
            "last_event": store.last_event_id(),
            "counts": store.count_jobs(),
            "paused": store.paused_types(),
            "limits": store.concurrency_limits(),
            "in_flight": store.jobs_in_flight(_PAGE_IN_FLIGHT),
            "failures": store.latest_failures(_PAGE_FAILURES),
            "workers": workers,
            "worker_count": worker_count,
            "schedules": store.list_schedules(_PAGE_SCHEDULES + 1),
        }


def _gather_job(store: Store, job_id: str) -> dict:
    """One job for the page: the job, its attempts, and the log of its current (or last) attempt."""
    try:
        with store.snapshot():
            job = store.get_job(job_id)
            attempts = store.list_attempts(job_id)
            shown = job["attempt"] or (attempts[-1]["id"] if attempts else None)
            log, log_id = store.attempt_log(job_id, shown, tail=_PAGE_LOG) if shown else ("", 0)
    except NotFound as error:
        return {"missing": error.detail}
    return {"job": job, "attempts": attempts, "log_attempt": shown, "log": log, "log_id": log_id}


def _esc(value: Any) -> str:
    """Text made safe for HTML, in an element or an attribute."""
    return bottle.html_escape("" if value is None else str(value))


def _spoken(seconds: float) -> str:
    """A duration as the page says it: 12 s, 5 min, 3 h, 2 d (the script's `spoken` says the same)."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 129600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} d"


def _moment(when: str | None, now: float, style: str = "ago") -> str:
    """A time in a <time> the script keeps current: "12 s ago" (style `ago`), "12 s" (`for`), "in 5 min" (`until`)."""
    if when is None:
        return "–"
    seconds = parse_time(when) - now if style == "until" else now - parse_time(when)
    if style == "until":
        text = f"in {_spoken(seconds)}" if seconds >= 0.5 else "due"
    else:
        text = _spoken(seconds) + (" ago" if style == "ago" else "")
    return f'<time datetime="{when}" title="{when}" data-{style}>{text}</time>'


def _job_link(job_id: str) -> str:
    """A link to a job's details (in place with the script, a page load without)."""
    return f'<a href="/?job={_esc(job_id)}" data-nav="job">{_esc(job_id)}</a>'


def _action(text: str, label: str, method: str, path: str, body: Any = None, danger: bool = False) -> str:
    """An admin's button: the script asks "label?", sends the request and shows the server's answer."""
    data = f' data-body="{_esc(_encode(body))}"' if body is not None else ""
    kind = "js-only danger" if danger else "js-only"
    return (
        f'<button class="{kind}" data-label="{_esc(label)}" data-method="{method}" '
        f'data-url="{_esc(urllib.parse.quote(path))}"{data}>{_esc(text)}</button>'
    )


def _job_action(job: dict) -> str:
    """What an admin may do to a job as it is: release it while held, cancel it while it may run, retry it
    once it failed or was cancelled."""
    cancel = _action("Cancel", f"Cancel job {job['id']}", "POST", f"/jobs/{job['id']}/cancel", danger=True)
    if job["status"] == "held":
        return _action("Release", f"Release job {job['id']}", "POST", f"/jobs/{job['id']}/release") + " " + cancel
    if job["status"] in ("pending", "processing"):
        return cancel
    if job["status"] in ("failed", "cancelled"):
        return _action("Retry", f"Retry job {job['id']}", "POST", f"/jobs/{job['id']}/retry")
    return ""


def _table(head: list[str], rows: list[list[str]], empty: str, foot: list[str] | None = None) -> str:
    """A table of cells that are HTML already; a heading that starts with '#' is a number column."""
    if not rows:
        return f'<p class="muted">{_esc(empty)}</p>'
    numeric = [title.startswith("#") for title in head]

    def line(cells: list[str], cell: str = "td") -> str:
        return (
            "<tr>"
            + "".join(
                f"<{cell}{' class=num' if number else ''}>{content}</{cell}>" for content, number in zip(cells, numeric)
            )
            + "</tr>"
        )

    heading = line([_esc(title.lstrip("#")) for title in head], "th")
    footer = f"<tfoot>{line(foot)}</tfoot>" if foot else ""
    body = "".join(line(row) for row in rows)
    return f'<div class="scroll"><table><thead>{heading}</thead><tbody>{body}</tbody>{footer}</table></div>'


def _card(title: str, note: str, content: str, name: str, wide: bool = False) -> str:
    """One box of the overview."""
    small = f" <small>{_esc(note)}</small>" if note else ""
    return (
        f'<section class="card{" wide" if wide else ""}" id="{name}"><h2>{_esc(title)}{small}</h2>{content}</section>'
    )


def _count(number: int, status: str) -> str:
    return f'<span class="{status if number else "zero"}">{number:,}</span>'


def _error_summary(error: Any) -> str:
    """A failure's error in one short line: its detail, the shell worker's last stderr line, or its JSON."""
    if isinstance(error, dict):
        if isinstance(error.get("detail"), str):
            text = error["detail"]
        elif isinstance(error.get("stderr"), str) and error["stderr"].strip():
            text = f"exit {error.get('return_code')}: {error['stderr'].strip().splitlines()[-1]}"
        else:
            text = _encode(error)
    else:
        text = error if isinstance(error, str) else _encode(error)
    return text if len(text) <= 160 else text[:159] + "…"


def _progress_bar(percent: float | None) -> str:
    """A job's progress: a bar and its percentage, or a moving bar while the worker has given none."""
    if percent is None:
        return '<progress max="100"></progress>'
    return f'<progress max="100" value="{percent:g}"></progress> {percent:g} %'


def _overview_html(data: dict, admin: bool) -> str:
    """The overview: queue by type and status, jobs in flight, failures, workers, schedules, paused types."""
    now, counts, paused, limits = data["now"], data["counts"], set(data["paused"]), data["limits"]
    totals = {status: sum(by_status.get(status, 0) for by_status in counts.values()) for status in JOB_STATUSES}

    def pause_button(job_type: str) -> str:
        if job_type in paused:
            return _action("Resume", f"Resume type {job_type}", "PUT", f"/types/{job_type}", {"paused": False})
        return _action("Pause", f"Pause type {job_type}", "PUT", f"/types/{job_type}", {"paused": True}, True)

    queue = _table(
        ["type", *(f"#{status}" for status in JOB_STATUSES), *([""] if admin else [])],
        [
            [
                _esc(job_type)
                + ('<span class="badge">paused</span>' if job_type in paused else "")
                + (
                    f'<span class="badge slots">at most {limits[job_type]:,} at once</span>'
                    if job_type in limits
                    else ""
                ),
                *(_count(counts.get(job_type, {}).get(status, 0), status) for status in JOB_STATUSES),
                *([pause_button(job_type)] if admin else []),
            ]
            for job_type in sorted(set(counts) | paused | set(limits))
        ],
        "No jobs yet.",
        ["all", *(_count(totals[status], status) for status in JOB_STATUSES), *([""] if admin else [])],
    )
    in_flight = _table(
        ["job", "type", "worker", "#attempt", "progress", "running for", *([""] if admin else [])],
        [
            [
                _job_link(job["id"]),
                _esc(job["type"]),
                _esc(job["assignee"]),
                f"{_esc(job['attempt'])} of {job['max_attempts']}",
                _progress_bar(job["progress"]),
                _moment(job["started_at"], now, "for"),
                *([_job_action(job)] if admin else []),
            ]
            for job in data["in_flight"]
        ],
        "Nothing is running.",
    )
    failures = _table(
        ["job", "type", "error", "failed", *([""] if admin else [])],
        [
            [
                _job_link(job["id"]),
                _esc(job["type"]),
                f'<span class="text" title="{_esc(_encode(job["error"]))}">{_esc(_error_summary(job["error"]))}</span>',
                _moment(job["finished_at"], now),
                *([_job_action(job)] if admin else []),
            ]
            for job in data["failures"]
        ],
        "No failed jobs.",
    )
    workers = _table(
        ["worker", "last contact", "working on"],
        [
            [
                _esc(worker["name"]),
                _moment(worker["last_seen_at"], now),
                ", ".join(_job_link(item["job"]) for item in worker["working_on"]) or '<span class="muted">idle</span>',
            ]
            for worker in data["workers"]
        ],
        "No worker has been in touch yet.",
    )
    schedules = _table(
        ["schedule", "type", "every", "next run", "last job", *([""] if admin else [])],
        [
            [
                _esc(schedule["name"]),
                _esc(schedule["type"]),
                _esc(schedule["every"])
                + (
                    ""
                    if schedule["timezone"] == "UTC"
                    else f'<br><small class="muted">{_esc(schedule["timezone"])}</small>'
                ),
                _moment(schedule["next_run_at"], now, "until"),
                _job_link(schedule["last_job"]) if schedule["last_job"] else "–",
                *(
                    [
                        _action(
                            "Run now",
                            f"Run schedule {schedule['name']} now",
                            "POST",
                            f"/schedules/{schedule['name']}/run",
                        )
                    ]
                    if admin
                    else []
                ),
            ]
            for schedule in data["schedules"][:_PAGE_SCHEDULES]
        ],
        "No schedules.",
    )
    paused_types = ", ".join(
        _esc(job_type) + (f" {pause_button(job_type)}" if admin else "") for job_type in sorted(paused)
    )
    queue += f'<p id="paused" class="muted">Paused (never handed out): {paused_types or "none"}</p>'

    def shown(listed: int, total: int) -> str:
        return f"{total:,}" if listed >= total else f"the first {listed:,} of {total:,}"

    more_schedules = len(data["schedules"]) > _PAGE_SCHEDULES
    return "".join(
        [
            '<div id="overview">',
            _card("Queue", "jobs by type and status", queue, "queue", wide=True),
            _card("In flight", shown(len(data["in_flight"]), totals["processing"]), in_flight, "in-flight", True),
            _card("Latest failures", shown(len(data["failures"]), totals["failed"]), failures, "failures", True),
            _card("Workers", shown(len(data["workers"]), data["worker_count"]), workers, "workers"),
            _card("Schedules", f"the first {_PAGE_SCHEDULES}" if more_schedules else "", schedules, "schedules"),
            "</div>",
        ]
    )


def _json_block(value: Any, whole: str) -> str:
    """A value as indented JSON in a <pre>, cut short when long (the `whole` of it is at that path)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > _PAGE_TEXT:
        text = f"{text[:_PAGE_TEXT]}\n… (cut short: all of it is at {whole})"
    return f"<pre>{_esc(text)}</pre>"


def _job_html(detail: dict | None, admin: bool, now: float) -> str:
    """A job's details: fields, parameters, result or error, attempts, and a log the script extends."""
    if detail is None:
        return '<section id="job" data-job=""></section>'
    if "missing" in detail:
        return (
            f'<section id="job" class="card" data-job=""><h2>{_esc(detail["missing"])}'
            '<a class="close" href="/" data-nav="close">close</a></h2></section>'
        )
    job, status = detail["job"], detail["job"]["status"]
    path = f"/jobs/{job['id']}"
    buttons = _job_action(job) if admin else ""
    progress = "–" if job["progress"] is None else f"{job['progress']:g} %"
    fields = [
        ("attempts", f"{job['attempts']} (max_attempts {job['max_attempts']})"),
        ("worker", _esc(job["assignee"] or "–")),
        ("progress", progress),
        ("priority", str(job["priority"])),
        ("timeout", f"{job['timeout']:g} s without progress"),
        ("submitted", _moment(job["created_at"], now)),
        ("due", _moment(job["run_at"], now, "until" if parse_time(job["run_at"]) > now else "ago")),
        ("updated", _moment(job["updated_at"], now)),
        ("finished", _moment(job["finished_at"], now)),
    ]
    attempts = _table(
        ["#attempt", "worker", "status", "started", "finished", "error"],
        [
            [
                _esc(attempt["id"]),
                _esc(attempt["worker"]),
                f'<span class="{_esc(attempt["status"])}">{_esc(attempt["status"])}</span>',
                _moment(attempt["started_at"], now),
                _moment(attempt["finished_at"], now),
                _esc(_error_summary(attempt["error"])) if attempt["error"] is not None else "",
            ]
            for attempt in detail["attempts"]
        ],
        "Not claimed yet.",
    )
    outcome = ""
    if job["result"] is not None or status == "done":
        outcome += f"<h3>Result</h3>{_json_block(job['result'], path)}"
    if job["error"] is not None:
        outcome += f"<h3>{'Error' if status == 'failed' else 'Last error'}</h3>{_json_block(job['error'], path)}"
    log = ""
    if detail["log_attempt"]:
        whole = f"{path}/attempts/{detail['log_attempt']}/log"
        cut = f' (its end; <a href="{_esc(whole)}">all of it</a>)' if len(detail["log"]) >= _PAGE_LOG else ""
        log = (
            f"<h3>Log of attempt {_esc(detail['log_attempt'])}{cut}</h3>"
            f'<pre id="job-log" data-attempt="{_esc(detail["log_attempt"])}" data-log-id="{detail["log_id"]}">'
            f"{_esc(detail['log'])}</pre>"
        )
    return "".join(
        [
            f'<section id="job" class="card wide" data-job="{_esc(job["id"])}">',
            f'<h2>Job {_esc(job["id"])} <span class="muted">{_esc(job["type"])}</span>',
            f'<span class="{_esc(status)}">{_esc(status)}</span> {buttons}',
            '<a class="close" href="/" data-nav="close">close</a></h2>',
            "<dl>" + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields) + "</dl>",
            f"<h3>Parameters</h3>{_json_block(job['parameters'], path)}{outcome}",
            f"<h3>Attempts</h3>{attempts}{log}",
            "</section>",
        ]
    )


def _page_html(body: str, header: str = "", csrf: str = "", state: dict | None = None) -> str:
    """A whole page around `body`. With `state` (for the script, as data attributes of <body>) it is
    the live page: it runs the script, or reloads itself every few seconds without JavaScript."""
    live = state is not None
    refresh = f'<noscript><meta http-equiv="refresh" content="{_PAGE_REFRESH}"></noscript>' if live else ""
    script = f"<script>{_PAGE_SCRIPT}</script>" if live else ""
    attributes = "".join(f' data-{name}="{_esc(value)}"' for name, value in (state or {}).items())
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>lazyboss</title>\n<meta name="csrf-token" content="{_esc(csrf)}">\n'
        f'<link rel="icon" href="data:,">\n{refresh}\n<style>{_PAGE_STYLE}</style>\n</head>\n'
        f"<body{attributes}>\n{header}\n<main>\n{body}\n</main>\n{script}\n</body>\n</html>\n"
    )


@dataclass
class _Viewer:
    """Who looks at the page: a token's name and role, the session's CSRF token (if by cookie), open mode."""

    name: str
    role: str
    csrf: str = ""
    open_mode: bool = False


def _page_tag(store: Store, viewer: _Viewer, job_id: str | None) -> str:
    """The page's ETag: it changes with anything the page shows, and once a minute for what merely ages."""
    state = (store.page_version(), viewer, job_id, int(store.clock() // 60))
    return '"' + hashlib.sha256(repr(state).encode()).hexdigest()[:24] + '"'


def _status_html(data: dict, job: dict | None, viewer: _Viewer, tag: str) -> str:
    """The status page as `viewer` sees it: with buttons for an admin, a logout for a session."""
    if viewer.open_mode:
        who = '<span class="muted">open mode: no tokens, so anyone on this machine may do anything</span>'
    else:
        who = f'<span>{_esc(viewer.name)} <span class="muted">({_esc(viewer.role)})</span></span>'
    if viewer.csrf:
        who += '<form method="post" action="/logout"><button>Log out</button></form>'
    header = (
        f'<header><h1>lazyboss</h1><span class="muted">{_esc(socket.gethostname())} · {__version__}</span>'
        f'<span id="live">reloads every {_PAGE_REFRESH} s</span><span class="who">{who}</span></header>'
    )
    admin = viewer.role == "admin"
    body = '<div id="answer" role="status" aria-live="polite"></div>'
    body += _job_html(job, admin, data["now"]) + _overview_html(data, admin)
    state = {"last-event": data["last_event"], "now": rfc3339(data["now"]), "tag": tag}
    return _page_html(body, header, viewer.csrf, state)


def _login_html(message: str | None = None) -> str:
    """The login form: a token's secret in, a session cookie out."""
    refusal = f'<p class="refused" role="alert">{_esc(message)}</p>' if message else ""
    form = (
        '<section class="card login"><h2>lazyboss</h2>'
        f"{refusal}"
        '<form method="post" action="/login">'
        '<label for="token">Token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Log in</button></form>'
        '<p class="muted">A token made with <code>lazyboss token create</code>. An admin may also act; '
        "other tokens see the page only.</p></section>"
    )
    return _page_html(form)


# --------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------


def _error_response(status: int, code: str, detail: str, headers: dict | None = None) -> bottle.HTTPResponse:
    """A JSON error response `{error, detail}`."""
    return bottle.HTTPResponse(
        _encode({"error": code, "detail": detail}),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class _Slots:
    """Counts the requests that hold a thread for long (streams, long polls) against one limit.

    waitress answers each request on one of `--threads` threads; a stream or
    a long poll keeps its thread while it waits. They may take all but
    `_RESERVED_THREADS` of them, so short requests always find a thread.
    """

    RETRY_AFTER = 5

    def __init__(self, threads: int):
        self.limit = max(1, threads - _RESERVED_THREADS)
        self.counts = {"streams": 0, "long_polls": 0, "job_waits": 0}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, kind: str) -> Iterator[None]:
        """Take a slot for the block, or answer 503 with Retry-After when none is free."""
        with self._lock:
            if sum(self.counts.values()) >= self.limit:
                raise _error_response(
                    503,
                    "busy",
                    f"all {self.limit} threads for streams and long polls are taken; try again shortly",
                    {"Retry-After": str(self.RETRY_AFTER)},
                )
            self.counts[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self.counts[kind] -= 1


_RECONNECT_MS = 3000


def _wsgi_text(value: str, what: str, code: str) -> str:
    """Text as clients send it (UTF-8) from what WSGI hands over (Latin-1), or 400 `code` saying `what` is
    not UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise LazybossError(f"{what} is not UTF-8", code) from None


def _header(name: str, default: str | None = None) -> str | None:
    """A request header (not Content-Type or Content-Length, which WSGI names apart) as text, or 400 when
    its bytes are not UTF-8. Read from the environ: bottle's header dict, built for the purpose, costs
    more than the request's own use of it."""
    value = bottle.request.environ.get("HTTP_" + name.upper().replace("-", "_"))
    return default if value is None else _wsgi_text(value, f"the {name} header", "bad_header")


def _query_values(name: str) -> list[str]:
    """Every value of a query parameter as text (`label=site:z%C3%BCrich`); 400 when its bytes are not
    UTF-8."""
    return [
        _wsgi_text(value, f"the query parameter {name!r}", "bad_query") for value in bottle.request.query.getall(name)
    ]


def _query(name: str, default: str | None = None) -> str | None:
    """A query parameter as text, as `_query_values` reads it; 400 when it is given twice with different
    values (`?keep_pending=1&keep_pending=0`): either would be a guess at what the caller meant."""
    values = _query_values(name)
    if len(set(values)) > 1:
        raise LazybossError(f"the query parameter {name!r} is given more than once, with different values", "bad_query")
    return values[0] if values else default


def _read_credentials() -> tuple[str | None, str | None]:
    """(name, secret) from `Authorization`: Basic gives both, Bearer only the secret."""
    scheme, _, value = (_header("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return None, value.strip()
    if scheme.lower() == "basic":
        try:
            name, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:  # not base64 (or not ASCII at all), or not UTF-8 inside
            raise LazybossError("the Basic credentials are not base64 of name:secret", "bad_credentials") from None
        return name or None, secret or None
    return None, None


@dataclass
class _Caller:
    """Who sent a request: a name (a worker's identity), a role, the session cookie if that said so, and
    whether the credential it came with still holds (asked again by streams and waits, which outlive it)."""

    name: str
    role: str
    session: str | None = None
    holds: Callable[[], bool] = lambda: True


_ROLE_RANK = {"client": 1, "worker": 2, "admin": 3}


def _article(role: str) -> str:
    """`a client`, `an admin`."""
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="lazyboss", Bearer realm="lazyboss"'}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_SESSION_COOKIE = "lazyboss_session"
_CSRF_HEADER = "X-CSRF-Token"


def _csrf_token(session: str) -> str:
    """A session's CSRF token: derived from its secret, so nothing more is stored, and unknown to
    any page that cannot read the HttpOnly cookie, that is any page but ours."""
    return hmac.new(session.encode(), b"lazyboss csrf", hashlib.sha256).hexdigest()


def _host_name(host: str) -> str:
    """The name in a Host header (without port or IPv6 brackets), lowercase."""
    try:
        return urllib.parse.urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


@functools.lru_cache(maxsize=64)
def _names_this_machine(host: str) -> bool:
    """Whether a Host header names this machine (127.0.0.1, [::1], localhost, with any port). Asked of
    every request in open mode, mostly of the same few texts: the answers are kept."""
    return _is_loopback(_host_name(host))


class _Api:
    """The HTTP handlers: each reads the request, calls the store, shapes the answer."""

    JSON_TYPES = ("application/json", "application/x-ndjson", "")

    def __init__(self, store: Store, config: Config, reaper: Reaper | None):
        self.store = store
        self.config = config
        self.reaper = reaper
        self.description: str | None = None  # GET /openapi.json, written when first asked for
        self.up_since = time.time()
        self.open_mode_allowed = _is_loopback(config.host)  # over TCP; the UNIX socket is always local
        self.session_lifetime = parse_duration(config.session_ttl)
        self.slots = _Slots(config.threads)
        self.request_durations = _Histogram(
            "lazyboss_http_request_duration_seconds",
            "Time to answer a request (a stream: until its first byte), by route and status class.",
        )

    # -- request helpers

    def identify(self) -> _Caller | None:
        """Who sends the request: by its Authorization header, else by its session cookie; None if neither.

        A cookie is sent by the browser whichever page makes the request, so
        for a change it counts only with the session's CSRF token in the
        X-CSRF-Token header, which only our own page knows.
        """
        name, secret = _read_credentials()
        # A secret that is a token's is all a request needs to read: whether any token exists (open
        # mode) is asked only without one.
        token = self.store.find_token(secret, name) if secret else None
        if token is None and not self.store.has_tokens():
            local = self.open_mode_allowed or bottle.request.environ.get("lazyboss.unix_socket", False)
            if not local:  # every token was revoked while we listen beyond loopback
                raise _error_response(401, "unauthorized", "no token exists: create one to use this server", _CHALLENGE)
            host = _header("Host")
            if host and not _names_this_machine(host):
                # A site whose name its DNS points at 127.0.0.1 would otherwise be this server's page. The
                # same holds over the UNIX socket: a proxy in front of it may pass such a site's name on.
                raise Forbidden(f"open mode only answers requests for 127.0.0.1 or localhost, not {host!r}", "host")
            # Open mode: a Bearer text may be a real secret meant for another server; never show or log it.
            return _Caller(name or "anonymous", "admin", holds=lambda: not self.store.has_tokens())
        if secret:
            if token is None:
                raise _error_response(401, "unauthorized", "wrong credentials", _CHALLENGE)
            return _Caller(token["name"], token["role"], holds=lambda: self.store.token_of(secret, name) is not None)
        session = bottle.request.get_cookie(_SESSION_COOKIE)
        token = self.store.find_session(session) if session else None
        if token is None:
            return None
        if bottle.request.method not in _SAFE_METHODS:
            sent = _header(_CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), _csrf_token(session).encode()):
                raise Forbidden(f"a change made with a session cookie needs the page's {_CSRF_HEADER} header", "csrf")
        return _Caller(token["name"], token["role"], session, lambda: self.store.session_of(session) is not None)

    def authenticate(self, needed: str) -> _Caller:
        """The caller, checked to hold at least the `needed` role: else 401 or 403."""
        caller = self.identify()
        if caller is None:
            if bottle.request.get_cookie(_SESSION_COOKIE):
                detail = "the session ended (expired, logged out, or its token revoked): log in again"
            else:
                detail = "credentials needed (curl -u NAME:SECRET, or a Bearer token)"
            raise _error_response(401, "unauthorized", detail, _CHALLENGE)
        if _ROLE_RANK[caller.role] < _ROLE_RANK[needed]:
            raise Forbidden(f"{caller.name} is {_article(caller.role)}; this needs {_article(needed)} token")
        return caller

    @staticmethod
    def check_path() -> None:
        """400 for a path whose bytes are not UTF-8: bottle drops such bytes when it routes, so that
        `POST /jobs/2%FF/cancel` would cancel job 2."""
        _wsgi_text(bottle.request.environ["bottle.raw_path"], "the path", "bad_path")

    @staticmethod
    def check_origin() -> None:
        """Refuse a change that a browser sends for a page of another site (cross-site request forgery).

        Browsers name the page's origin in `Origin` on every POST, PUT and
        DELETE; curl and the client send none. This holds in open mode too,
        where no cookie is needed to change things.
        """
        origin = _header("Origin")
        if origin is None:
            return
        if urllib.parse.urlsplit(origin).netloc.lower() != (_header("Host") or "").lower():
            raise Forbidden(f"a page from {origin} may not change anything here", "cross_origin")

    @staticmethod
    def caller() -> _Caller:
        """The authenticated caller of the current request."""
        return bottle.request.environ["lazyboss.caller"]

    def gone(self) -> Callable[[], bool]:
        """For a request that waits or streams: a test of whether to stop, its client having left or its
        credential ended (a token revoked, a session logged out or expired, open mode ended by a first
        token). A credential is asked again at once after a revocation by this process, else at most once
        a second (another process on the same file cannot tell this one)."""
        client_gone = bottle.request.environ.get("waitress.client_disconnected", lambda: False)
        holds, revocations = self.caller().holds, self.store.credentials_revoked
        checked = [revocations.generation, time.monotonic(), True]  # generation, when, whether it held

        def gone() -> bool:
            if client_gone():
                return True
            generation, now = revocations.generation, time.monotonic()
            if checked[2] and (generation != checked[0] or now - checked[1] >= _FOREIGN_WRITE_POLL):
                checked[:] = [generation, now, holds()]
            return not checked[2]

        return gone

    def check_still_authorized(self, gone: Callable[[], bool]) -> None:
        """401 for a wait that ended because its credential did. A wait whose client left is no refusal
        (nobody hears its answer, but the log and the metrics would count a 401)."""
        if gone() and not bottle.request.environ.get("waitress.client_disconnected", lambda: False)():
            raise _error_response(401, "unauthorized", "the credential was revoked while waiting", _CHALLENGE)

    def reporter(self) -> str:
        """The name of a worker reporting on an attempt, noted as a contact."""
        name = self.caller().name
        self.store.saw_worker(name)
        return name

    def read_body(self) -> bytes:
        """The raw request body, refusing one larger than --max-body with 413."""
        request = bottle.request
        limit = self.config.max_body
        if request.content_length > limit:
            raise _error_response(413, "too_large", f"the body is {request.content_length} bytes; the limit is {limit}")
        data = request.body.read(limit + 1)
        if len(data) > limit:
            raise _error_response(413, "too_large", f"the body is over the limit of {limit} bytes")
        return data

    def read_json(self, allow_empty: bool = False) -> Any:
        """The request body parsed as JSON (or NDJSON, as a list)."""
        content_type = bottle.request.content_type.split(";")[0].strip().lower()
        data = self.read_body()
        if not data.strip() and allow_empty:
            return None
        if content_type not in self.JSON_TYPES:
            raise _error_response(
                415,
                "unsupported_media_type",
                f"send JSON with Content-Type: application/json (curl --json), not {content_type!r}",
            )
        if content_type == "application/x-ndjson":
            return [_parse_json(line) for line in data.splitlines() if line.strip()]
        return _parse_json(data)

    def query_number(self, name: str, default: float, low: float, high: float) -> float:
        """A numeric query parameter within bounds, or 422."""
        text = _query(name)
        if text is None or text == "":
            return default
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"query parameter {name!r} must be a number, not {text!r}") from None
        return _check_number(value, name, low, high)

    def query_count(self, name: str, high: int) -> int | None:
        """A whole-number query parameter from 1 to `high`, None when absent, or 422."""
        text = _query(name)
        if text is None or text == "":
            return None
        number = _as_id(text)
        if number is None or not 1 <= number <= high:
            raise Invalid(f"{name!r} must be a whole number from 1 to {high}, not {text!r}")
        return number

    def last_event_id(self) -> int | None:
        """The Last-Event-ID header (or `last_event_id` query parameter) as a number."""
        text = _header("Last-Event-ID") or _query("last_event_id")
        if text is None or text.strip() == "":
            return None
        number = _as_id(text.strip())
        if number is None:
            raise Invalid(f"Last-Event-ID {text!r} is not an event id this server gave")
        # An id past the newest event here came from another database: the server runs on another file
        # now, or on a backup put back. What happens from now on is news to the client, whatever its ids.
        return min(number, self.store.last_event_id())

    @staticmethod
    def check_statuses(statuses: list[str]) -> None:
        """422 for a status that is not a job's."""
        for status in statuses:
            if status not in JOB_STATUSES:
                raise Invalid(f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")

    def query_list(self, name: str) -> list[str]:
        """A repeatable query parameter, also accepting comma-separated values."""
        values = []
        for item in _query_values(name):
            values += [part for part in item.split(",") if part]
        return _distinct(values, name)

    # -- jobs

    def submit(self) -> str:
        """POST /jobs: one job (202 + Location) or a batch (202 + list)."""
        body = self.read_json()
        key = _header("Idempotency-Key")
        if key is not None and not 0 < len(key) <= 200:
            raise Invalid("Idempotency-Key must be 1-200 characters")
        bottle.response.status = 202
        if isinstance(body, list):
            if len(body) > _MAX_BATCH:
                raise LazybossError(
                    f"a batch holds at most {_MAX_BATCH:,} jobs, not {len(body):,}: send it in several",
                    "too_many_jobs",
                    413,
                )
            specs = [parse_job_spec(item, f"job {index}: ") for index, item in enumerate(body)]
            return "[" + ",".join(self.store.submit_jobs(specs, key, batch=True)) + "]"
        (view,) = self.store.submit_jobs([parse_job_spec(body)], key)
        bottle.response.set_header("Location", f"/jobs/{json.loads(view)['id']}")
        return view

    def list_jobs(self) -> Iterator[str]:
        """GET /jobs: newest first, filtered by status and type, paged by cursor."""
        statuses = self.query_list("status")
        self.check_statuses(statuses)
        limit = self.query_count("limit", 1000) or 50
        cursor = _query("cursor") or None
        before = None
        if cursor:
            try:
                before = _as_id(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
            except ValueError:  # not base64, or not text inside
                pass
            if before is None:
                raise LazybossError(f"cursor {cursor!r} is not one this server gave", "bad_cursor")
        pages = self.store.list_jobs(statuses, self.query_list("type"), limit, before)
        first = next(pages)  # read here: a database that fails gets its status, not a listing cut short
        bottle.response.content_type = "application/json"

        def generate() -> Iterator[str]:  # a page per write: a long listing of large jobs is never held whole
            yield '{"jobs":['
            separator, last = "", None
            for views, continue_below in itertools.chain([first], pages):
                if views:
                    yield separator + ",".join(views)
                    separator = ","
                last = continue_below
            following = base64.urlsafe_b64encode(str(last).encode()).decode().rstrip("=") if last else None
            yield f'],"next":{_encode(following)}}}'

        return generate()

    def purge(self) -> str:
        """DELETE /jobs?type=T&status=S[&older_than=7d]: delete those jobs (never running ones); how many."""
        types, statuses = self.query_list("type"), self.query_list("status")
        if not types or not statuses:
            raise Invalid("name the jobs to delete by type= and status= (both; each may repeat)")
        self.check_statuses(statuses)
        older_than = _query("older_than")
        if older_than is not None:
            try:
                older_than = parse_duration(older_than)
            except ValueError as error:
                raise Invalid(f"older_than: {error}") from None
        return _encode({"deleted": self.store.purge_jobs(types, statuses, older_than)})

    def get_job(self, job_id: str) -> Any:
        """GET /jobs/{id}: the job, or with Accept: text/event-stream its changes as they happen."""
        view, status, latest = self.store.follow_job(job_id)
        if "text/event-stream" not in _header("Accept", ""):  # type: ignore[operator]
            return view
        after = self.last_event_id()
        finished = status in FINISHED_STATUSES
        opening = []
        if after is None:  # start with the job as it is now, labelled with the event that made it so
            after, opening = latest, [_sse_message(latest, view)]
        elif finished and latest <= after:
            bottle.response.status = 204  # nothing more will come: tells EventSource to stop reconnecting
            return ""
        large = self.store.large_fields_at(job_id, after)
        return self.stream(
            opening,
            after,
            [job_id],
            [],
            render=lambda event: event.whole_job(large),  # the job alone and whole, as the spec says
            # A replayed end the job has moved on from (cancelled, then retried) is history, not the end.
            last=lambda event: event.kind in FINISHED_STATUSES and event.id >= latest,
            finished=finished and bool(opening),
            present=lambda: self.store.has_job(job_id),
        )

    def events(self) -> Any:
        """GET /events: every job event from now (or after Last-Event-ID), filtered by type and job."""
        after = self.last_event_id()
        jobs = self.query_list("job")
        for job_id in jobs:
            _parse_id(job_id, "job")
        if after is None:
            after = self.store.last_event_id()
        return self.stream(
            [], after, jobs, self.query_list("type"), render=lambda event: event.data, last=lambda event: False
        )

    def stream(
        self,
        opening: list[str],
        after: int,
        jobs: list[str],
        types: list[str],
        render: Callable[[_Event], str],
        last: Callable[[_Event], bool],
        finished: bool = False,
        present: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """A text/event-stream of events after `after`, each as `render` makes its data.

        It ends after the event for which `last` is true, at shutdown, or when
        the client goes; `finished` ends it right after the opening events.
        A job's stream also ends once `present()` says its job was purged (it has
        no event to say so): at once after a purge by this server, else within
        a heartbeat. Asked again, it answers 404.
        """
        response = bottle.response
        response.content_type = "text/event-stream"
        response.set_header("Cache-Control", "no-cache")
        response.set_header("X-Accel-Buffering", "no")  # tell nginx not to buffer the stream
        gone, store, heartbeat = self.gone(), self.store, self.config.heartbeat

        def generate() -> Iterator[str]:
            with self.slots.hold("streams"):
                # Sent at once so the client sees the headers before any event;
                # it also tells EventSource how soon to reconnect.
                yield f"retry: {_RECONNECT_MS}\n\n"
                yield from opening
                if finished:
                    return
                cursor, quiet_since = after, time.monotonic()
                purges = store.jobs_purged.generation
                while not store.stopping.is_set() and not gone():
                    seen = store.events_added.generation
                    rows = store.feed.events_after(cursor, jobs, types)
                    ending = next((index for index, row in enumerate(rows) if last(row)), None)
                    if ending is not None:
                        rows = rows[: ending + 1]
                    if rows:  # one write for all that is new: far cheaper than one per event
                        yield "".join(_sse_message(row.id, render(row)) for row in rows)
                        cursor = rows[-1].id
                    if ending is not None:
                        return
                    if rows:
                        quiet_since = time.monotonic()
                        continue
                    beat = time.monotonic() - quiet_since >= heartbeat
                    if present is not None and (beat or purges != store.jobs_purged.generation):
                        purges = store.jobs_purged.generation
                        if not present():
                            return
                    if beat:
                        yield ": keep-alive\n\n"
                        quiet_since = time.monotonic()
                    store.events_added.wait(seen, min(_FOREIGN_WRITE_POLL, heartbeat))

        return generate()

    def claim(self) -> Any:
        """POST /jobs/attempt: claim the next job, or with `max` up to that many, long polling up to `wait` seconds."""
        body = self.read_json(allow_empty=True)
        if body is None:
            body = {}
        if not isinstance(body, dict) or set(body) - {"wait", "types", "max", "labels"}:
            raise Invalid(
                "the claim body is an object with optional 'wait' (seconds), 'types' (list of strings), "
                "'max' (jobs at most) and 'labels' (the worker's, an object of strings)"
            )
        labels = _parse_label_filter(self.query_list("label"))
        for key, value in _check_labels(body.get("labels", {}), "labels").items():
            if labels.setdefault(key, value) != value:
                raise Invalid(f"label {key!r} is given twice, as {labels[key]!r} and {value!r}")
        types = self.query_list("type")
        if "types" in body:
            if not isinstance(body["types"], list) or not all(isinstance(t, str) for t in body["types"]):
                raise Invalid("'types' must be a list of strings")
            types = _distinct(types + body["types"], "types")
        wait = self.query_number("wait", 0, 0, float("inf"))
        if "wait" in body:
            wait = _check_number(body["wait"], "wait", 0, float("inf"))
        wait = min(wait, self.config.max_wait)
        most = self.query_count("max", _MAX_CLAIM)  # checked even when the body's wins, as `wait` is
        if "max" in body:
            most = _check_int(body["max"], "max", 1, _MAX_CLAIM)
        limit = most or 1
        worker = self.caller().name
        self.store.saw_worker(worker)
        if wait > 0:
            gone = self.gone()
            with self.slots.hold("long_polls"):
                claims = self.store.wait_for_jobs(worker, types, wait, gone, limit, labels)
            if claims and gone():  # revoked (or left) while the claim was made: nobody may have them
                self.store.release_claims(claims)
                claims = []
            self.check_still_authorized(gone)
        else:
            claims = self.store.claim_jobs(worker, types, limit, labels)
        if not claims:
            bottle.response.status = 204
            return ""
        bottle.response.status = 201
        if most is None:  # the single form, as it always was
            bottle.response.set_header("Location", claims[0].location)
            return self.hand_over(claims[0].view, claims)
        views = ",".join(_with_members(claim.view, {"location": _encode(claim.location)}) for claim in claims)
        return self.hand_over(f'{{"jobs":[{views}]}}', claims)

    def hand_over(self, answer: str, claims: list[_Claim]) -> Iterator[bytes]:
        """The answer to a claim as a response body that puts its jobs back if the body could not be written.

        waitress refuses to write to a client it has seen leave (and then
        closes the body without asking for the rest): the jobs go back to
        pending at once instead of after their lease. An answer that was written
        but lost afterwards still comes back after the lease.
        """
        body = answer.encode()
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Content-Length", str(len(body)))
        store = self.store

        def deliver() -> Iterator[bytes]:
            written = False
            try:
                yield body
                written = True  # waitress asks for more only after writing what it had
            finally:
                if not written:
                    store.release_claims(claims)

        return deliver()

    def put_result(self, job_id: str, attempt_id: str) -> str:
        """PUT /jobs/{id}/attempts/{aid}/result."""
        return self.report_one(_Report(job_id, attempt_id, "result", self.read_json(allow_empty=True)))

    def put_error(self, job_id: str, attempt_id: str) -> str:
        """PUT /jobs/{id}/attempts/{aid}/error."""
        return self.report_one(_Report(job_id, attempt_id, "error", self.read_json(allow_empty=True)))

    def report_one(self, report: _Report) -> str:
        """201 and the job, once the report is taken; else its refusal."""
        (outcome,) = self.store.report_attempts(self.reporter(), [report])
        if isinstance(outcome, LazybossError):
            raise outcome
        bottle.response.status = 201
        return outcome

    def post_reports(self) -> str:
        """POST /jobs/reports: results and errors of many attempts in one transaction, each with its outcome."""
        outcomes = self.store.report_attempts(self.reporter(), _parse_reports(self.read_json()))
        answers = [
            f'{{"status":{outcome.status},"error":{_encode(outcome.code)},"detail":{_encode(outcome.detail)}}}'
            if isinstance(outcome, LazybossError)
            else f'{{"status":201,"job":{outcome}}}'
            for outcome in outcomes
        ]
        return f'{{"reports":[{",".join(answers)}]}}'

    def put_progress(self, job_id: str, attempt_id: str) -> str:
        """PUT /jobs/{id}/attempts/{aid}/progress: a text/event-stream of progress, acknowledged."""
        content_type = bottle.request.content_type.split(";")[0].strip().lower()
        body = self.read_body()
        if body.strip() and content_type != "text/event-stream":
            raise _error_response(
                415, "unsupported_media_type", f"send progress as Content-Type: text/event-stream, not {content_type!r}"
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise LazybossError("the progress stream is not UTF-8", "bad_stream") from None
        items = parse_progress(text, self.last_event_id())
        taken = self.store.record_progress(job_id, attempt_id, self.reporter(), items)
        bottle.response.status = 202
        bottle.response.content_type = "text/event-stream"
        return "".join(f"id: {item}\nevent: seen\ndata: seen\n\n" for item in taken)

    def get_log(self, job_id: str, attempt_id: str) -> str:
        """GET /jobs/{id}/attempts/{aid}/log: the attempt's log chunks as plain text."""
        text, _ = self.store.attempt_log(job_id, attempt_id)
        bottle.response.content_type = "text/plain; charset=utf-8"
        return text

    def list_attempts(self, job_id: str) -> str:
        """GET /jobs/{id}/attempts."""
        return _encode(self.store.list_attempts(job_id))

    def get_attempt(self, job_id: str, attempt_id: str) -> str:
        """GET /jobs/{id}/attempts/{aid}."""
        return _encode(self.store.get_attempt(job_id, attempt_id))

    def cancel(self, job_id: str) -> str:
        """POST /jobs/{id}/cancel."""
        return _encode(self.store.cancel_job(job_id))

    def retry(self, job_id: str) -> str:
        """POST /jobs/{id}/retry."""
        return _encode(self.store.retry_job(job_id))

    def release(self, job_id: str) -> str:
        """POST /jobs/{id}/release: a held job pending now; with `wait`, answered once it has finished
        (200), or 202 with the job as it is when `wait` ran out."""
        wait = min(self.query_number("wait", 0, 0, float("inf")), self.config.max_wait)
        if wait <= 0:
            return _encode(self.store.release_job(job_id))
        gone = self.gone()
        with self.slots.hold("job_waits"):  # taken first: a busy server refuses before anything changed
            self.store.release_job(job_id)
            view, status = self.store.await_finish(job_id, wait, gone)
        self.check_still_authorized(gone)
        if status not in FINISHED_STATUSES:
            bottle.response.status = 202
            bottle.response.set_header("Location", f"/jobs/{_parse_id(job_id, 'job')}")
        return view

    # -- supervising

    def create_token(self) -> str:
        """POST /tokens {name, role}: 201 with the secret, shown this once."""
        body = self.read_json()
        if not isinstance(body, dict) or set(body) - {"name", "role"} or not isinstance(body.get("name"), str):
            raise Invalid('send {"name": ..., "role": "admin" | "worker" | "client"}')
        secret = self.store.create_token(body["name"], body.get("role", "worker"))
        bottle.response.status = 201
        return _encode({"name": body["name"], "role": body.get("role", "worker"), "secret": secret})

    def list_tokens(self) -> str:
        """GET /tokens: names, roles and times, never secrets."""
        return _encode(self.store.list_tokens())

    def revoke_token(self, name: str) -> str:
        """DELETE /tokens/{name}: the token stops working at once."""
        self.store.revoke_token(name)
        bottle.response.status = 204
        return ""

    def put_type(self, name: str) -> str:
        """PUT /types/{type}: change the given settings; null restores a default."""
        if not _TYPE_NAME.fullmatch(name):
            raise Invalid("a type is 1-100 letters, digits, '_', '.', ':' or '-'")
        return _encode(self.store.put_type(name, _parse_type_settings(self.read_json()), self.caller().name))

    def delete_type(self, name: str) -> str:
        """DELETE /types/{type}: forget its settings (409 while it has jobs)."""
        self.store.delete_type(name, self.caller().name)
        bottle.response.status = 204
        return ""

    def list_types(self) -> str:
        """GET /types, with `?label=key:value` only the types that carry every such label."""
        return _encode(self.store.list_types(_parse_label_filter(self.query_list("label"))))

    def type_versions(self, name: str) -> str:
        """GET /types/{type}/versions: every change of its settings, who made it and when, oldest first."""
        return _encode({"type": name, "versions": self.store.type_versions(name)})

    def get_type(self, name: str) -> str:
        """GET /types/{type}."""
        return _encode(self.store.get_type(name))

    def list_workers(self) -> str:
        """GET /workers."""
        return _encode(self.store.list_workers())

    def put_schedule(self, name: str) -> str:
        """PUT /schedules/{name} {type, parameters, every, timezone?}."""
        if not _TOKEN_NAME.fullmatch(name):
            raise Invalid("a schedule name is 1-64 letters, digits, '_', '.', '@' or '-'")
        body = self.read_json()
        if not isinstance(body, dict):
            raise Invalid('send {"type": ..., "parameters": ..., "every": "10 minutes"}')
        unknown = sorted(set(body) - {"type", "parameters", "every", "timezone"})
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r}; known: every, parameters, timezone, type")
        if not isinstance(body.get("type"), str) or not _TYPE_NAME.fullmatch(body["type"]):
            raise Invalid("'type' must be a job type name")
        try:
            every = parse_every(body.get("every"), body.get("timezone", "UTC"))
        except ValueError as error:
            raise Invalid(f"every: {error}") from None
        return _encode(self.store.put_schedule(name, body["type"], body.get("parameters", {}), every))

    def list_schedules(self) -> str:
        """GET /schedules."""
        return _encode(self.store.list_schedules())

    def get_schedule(self, name: str) -> str:
        """GET /schedules/{name}."""
        return _encode(self.store.get_schedule(name))

    def delete_schedule(self, name: str) -> str:
        """DELETE /schedules/{name}[?keep_pending=true]: no more ticks, and its pending jobs cancelled (or kept)."""
        keep = _query("keep_pending", "false")
        if keep not in ("true", "false"):
            raise Invalid(f"keep_pending must be true or false, not {keep!r}")
        return _encode({"name": name, "cancelled": self.store.delete_schedule(name, keep_pending=keep == "true")})

    def run_schedule(self, name: str) -> str:
        """POST /schedules/{name}/run: one job now, besides the ticks."""
        job = self.store.run_schedule(name)
        bottle.response.status = 202
        bottle.response.set_header("Location", f"/jobs/{job['id']}")
        return _encode(job)

    # -- the status page

    def page(self) -> str:
        """GET /: the status page for a browser (or its login form); a JSON 404 for anyone else."""
        if "text/html" not in (_header("Accept") or ""):
            raise NotFound("no such resource: /; a browser (Accept: text/html) gets the status page here")
        for header, value in _PAGE_HEADERS.items():
            bottle.response.set_header(header, value)
        caller = self.identify()
        if caller is None:
            if bottle.request.get_cookie(_SESSION_COOKIE):
                self.set_session_cookie("", 0)  # it ended: let the browser forget it
            return _login_html()
        viewer = _Viewer(
            caller.name,
            caller.role,
            _csrf_token(caller.session) if caller.session else "",
            open_mode=not self.store.has_tokens(),
        )
        job_id = _query("job")
        tag = _page_tag(self.store, viewer, job_id)
        if _header("If-None-Match") == tag:  # the script looks often; mostly nothing changed
            bottle.response.status = 304
            return ""
        bottle.response.set_header("ETag", tag)
        job = _gather_job(self.store, job_id) if job_id else None
        return _status_html(_gather_overview(self.store), job, viewer, tag)

    def login(self) -> str:
        """POST /login with a token's secret (a form field or JSON `token`): a session cookie, then the page."""
        if not self.store.has_tokens():
            raise Conflict("no token exists (open mode): the status page needs no login", "open_mode")
        content_type = bottle.request.content_type.split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            try:
                form = dict(urllib.parse.parse_qsl(self.read_body().decode("utf-8"), errors="strict"))
            except UnicodeDecodeError:
                raise LazybossError("the form is not UTF-8", "bad_form") from None
        else:
            form = self.read_json()
        if not isinstance(form, dict) or not isinstance(form.get("token"), str) or not form["token"].strip():
            raise Invalid("send the token's secret as the form field or JSON member 'token'")
        token = self.store.find_token(form["token"].strip())
        if token is None:
            raise Unauthorized("wrong token: no token has this secret")
        self.set_session_cookie(self.store.create_session(token["name"], self.session_lifetime), self.session_lifetime)
        bottle.response.status = 303
        bottle.response.set_header("Location", "/")
        return ""

    def logout(self) -> str:
        """POST /logout: end this browser's session, then back to the page (its login form)."""
        session = bottle.request.get_cookie(_SESSION_COOKIE)
        if session:
            self.store.end_session(session)
        self.set_session_cookie("", 0)
        bottle.response.status = 303
        bottle.response.set_header("Location", "/")
        return ""

    @staticmethod
    def set_session_cookie(value: str, lifetime: float) -> None:
        """Set (or, with lifetime 0, delete) the session cookie: out of scripts' reach, never sent cross-site."""
        secure = "; Secure" if bottle.request.urlparts.scheme == "https" else ""
        bottle.response.set_header(
            "Set-Cookie",
            f"{_SESSION_COOKIE}={value}; Path=/; Max-Age={int(lifetime)}; HttpOnly; SameSite=Strict{secure}",
        )

    # -- monitoring

    def health(self) -> str:
        """GET /health: 200 when the database takes writes and the reaper runs, else 503."""
        report = {"status": "ok", "version": __version__, "database": "ok", "reaper": "ok"}
        trouble = self.store.trouble()
        if trouble is not None:
            report.update(status="unhealthy", database=trouble.code, detail=trouble.detail)
        if self.reaper is not None and not self.reaper.healthy():
            report.update(status="unhealthy", reaper="no round finished recently")
        bottle.response.status = 200 if report["status"] == "ok" else 503
        return _encode(report)

    def snapshot(self) -> dict:
        """Everything /stats and /metrics report, gathered once (the database's part in one snapshot)."""
        with self.store.snapshot():
            by_type, oldest = self.store.count_jobs(), self.store.oldest_pending_ages()
            limits = self.store.concurrency_limits()
        totals = {status: 0 for status in JOB_STATUSES}
        for counts in by_type.values():
            for status, number in counts.items():
                totals[status] += number
        counters: dict[str, dict[str, int]] = {name: {} for name in _COUNTERS}
        for (name, job_type), number in sorted(self.store.counters.items()):
            counters[name][job_type] = number
        return {
            "up_since": rfc3339(self.up_since),
            "version": __version__,
            "jobs": totals,
            "jobs_by_type": by_type,
            "counters": counters,
            "oldest_pending_age_seconds": oldest,
            "concurrency_limits": limits,
            "waiting_workers": self.slots.counts["long_polls"],
            "open_streams": self.slots.counts["streams"],
            "file_bytes": self.store.file_sizes(),
            "disk_free_bytes": self.store.disk_free(),
            "reaper_last_run": rfc3339(self.reaper.last_run if self.reaper else None),
        }

    def openapi(self) -> str:
        """GET /openapi.json: this API described in OpenAPI 3.1 (an idle server does not hold it)."""
        if self.description is None:
            self.description = _encode(_openapi_document(_ROUTES))
        return self.description

    def stats(self) -> str:
        """GET /stats: what the server holds and does now, as JSON."""
        return _encode(self.snapshot())

    def metrics(self) -> str:
        """GET /metrics: the same in Prometheus' text exposition format."""
        snapshot = self.snapshot()
        lines = _Exposition()
        lines.family("lazyboss_info", "gauge", "The running lazyboss.", [({"version": __version__}, 1)])
        lines.family("lazyboss_start_time_seconds", "gauge", "When this process started.", [({}, self.up_since)])
        lines.family(
            "lazyboss_jobs",
            "gauge",
            "Jobs in the database by type and status.",
            [
                ({"type": job_type, "status": status}, counts.get(status, 0))
                for job_type, counts in sorted(snapshot["jobs_by_type"].items())
                for status in JOB_STATUSES
            ],
        )
        for name, help_text in _COUNTERS.items():
            samples = [({"type": t}, n) for t, n in snapshot["counters"][name].items()]
            lines.family(f"lazyboss_{name}_total", "counter", help_text, samples)
        lines.family(
            "lazyboss_oldest_pending_age_seconds",
            "gauge",
            "How long the longest-waiting due job of each type has waited.",
            [({"type": t}, age) for t, age in sorted(snapshot["oldest_pending_age_seconds"].items())],
        )
        lines.family(
            "lazyboss_concurrency_limit",
            "gauge",
            "Jobs of the type that may be processing at once (types with a limit only; compare lazyboss_jobs).",
            [({"type": t}, limit) for t, limit in snapshot["concurrency_limits"].items()],
        )
        lines.family(
            "lazyboss_waiting_workers", "gauge", "Long polls waiting for a job.", [({}, snapshot["waiting_workers"])]
        )
        lines.family("lazyboss_open_streams", "gauge", "Open event streams.", [({}, snapshot["open_streams"])])
        lines.family(
            "lazyboss_file_bytes",
            "gauge",
            "Size of the database file and its WAL.",
            [({"file": name}, size) for name, size in snapshot["file_bytes"].items()],
        )
        lines.family(
            "lazyboss_disk_free_bytes",
            "gauge",
            "Free space for lazyboss on the file system holding the database: alert well before 0.",
            [({}, snapshot["disk_free_bytes"])] if snapshot["disk_free_bytes"] is not None else [],
        )
        last_run = [({}, self.reaper.last_run)] if self.reaper and self.reaper.last_run else []
        lines.family("lazyboss_reaper_last_run_timestamp_seconds", "gauge", "When the reaper last finished.", last_run)
        self.request_durations.expose(lines)
        bottle.response.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return lines.text()


class _ApiPlugin:
    """Bottle plugin: authenticate per the route's `role`; answer LazybossError (and SQLite's
    complaints about the file, as StorageError) as JSON."""

    name = "lazyboss"
    api = 2

    def __init__(self, handlers: _Api):
        self.handlers = handlers

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        """Wrap one route's handler."""
        needed = route.config.get("role")
        page = route.config.get("page", False)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with self.handlers.store.database_errors():
                    self.handlers.check_path()
                    if bottle.request.method not in _SAFE_METHODS:
                        self.handlers.check_origin()
                    if needed:
                        bottle.request.environ["lazyboss.caller"] = self.handlers.authenticate(needed)
                    body = callback(*args, **kwargs)
            except LazybossError as error:
                if page and "text/html" in bottle.request.environ.get("HTTP_ACCEPT", ""):
                    # A browser's form post: the refusal in words, on the login form.
                    raise bottle.HTTPResponse(_login_html(error.detail), error.status, _PAGE_HEADERS) from None
                raise _error_response(error.status, error.code, error.detail) from None
            if isinstance(body, str) and body and "Content-Type" not in bottle.response.headers:
                bottle.response.content_type = "application/json"
            return body

        return wrapper


# -- the route table and its OpenAPI description (GET /openapi.json)
#
# Each route is one `_Route` in `_ROUTES` below: its method, path, handler and least role, and its OpenAPI
# operation. `make_app` serves exactly these routes and `_openapi_document` describes exactly these, so a
# route cannot be served without being described. What a route's role, method and body imply (401/403,
# the origin check, 413/415, the refusal codes) is added by `_openapi_document`; an entry gives the rest.


def _schema(name: str) -> dict:
    """A reference to one of the document's schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict:
    return {"type": "array", "items": _schema(name)}


_BATCH_SIZE = {"minItems": 1, "maxItems": _MAX_BATCH}


def _nullable(schema: dict) -> dict:
    """The schema, or null."""
    return {**schema, "type": [schema["type"], "null"]}


def _headers(meanings: dict[str, str]) -> dict:
    """Response headers, by name: what each says."""
    return {name: {"description": text, "schema": {"type": "string"}} for name, text in meanings.items()}


def _answer(
    description: str,
    schema: dict | None = None,
    media: str = "application/json",
    headers: dict[str, str] | None = None,
    links: dict | None = None,
) -> dict:
    """A successful response: what it means, its body's schema in `media`, its headers, and its links
    (the operations its body gives parameters to, from `_links`)."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {media: {"schema": schema}}
    if headers:
        response["headers"] = _headers(headers)
    if links:
        response["links"] = links
    return response


def _links(*operations: str, **parameters: str) -> dict:
    """Links to these operations (by id: their handlers' names), whose parameters come from the answer's
    body at these JSON pointers."""
    values = {name: f"$response.body#{pointer}" for name, pointer in parameters.items()}
    return {operation: {"operationId": operation, "parameters": values} for operation in operations}


def _parameter(place: str, name: str, description: str, schema: dict, **more: Any) -> dict:
    """A parameter in the query, a header or the path."""
    return {"name": name, "in": place, "description": description, "schema": schema, **more}


def _repeated(name: str, description: str, items: dict | None = None) -> dict:
    """A query parameter that may come again (`?type=a&type=b`), each also a comma-separated list."""
    schema = {"type": "array", "items": items or {"type": "string"}}
    more = f" At most {_MAX_FILTER_VALUES} different values."
    return _parameter("query", name, description + more, schema, style="form", explode=True)


def _json_body(schema: dict, description: str, required: bool = True) -> dict:
    return {"description": description, "required": required, "content": {"application/json": {"schema": schema}}}


_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339 UTC with milliseconds"}
_ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
_ANY_JSON = {"description": "any JSON value"}
_SECONDS = {"type": "number", "minimum": 0, "maximum": 366 * 86400}
_LEASE = {"type": "number", "minimum": 0.001, "maximum": 366 * 86400}
_ATTEMPT_BUDGET = {"type": "integer", "minimum": 1, "maximum": 1000}
_TYPE_NAME_SCHEMA = {"type": "string", "pattern": f"^{_TYPE_NAME.pattern}$"}
_NAME_SCHEMA = {"type": "string", "pattern": f"^{_TOKEN_NAME.pattern}$"}
_REPORTED_ID = {"type": "string", "description": "as the claim gave it; another gets its own 404"}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_LABEL_VALUE = {"type": "string", "maxLength": _MAX_LABEL_VALUE, "pattern": "^[^\\u0000]*$"}
_LABELS = {
    "type": "object",
    "maxProperties": _MAX_LABELS,
    "propertyNames": {"pattern": f"^{_LABEL_KEY.pattern}$"},
    "additionalProperties": _LABEL_VALUE,
}
_CLAIMS = {
    "type": "object",
    "maxProperties": _MAX_LABELS,
    "propertyNames": {"pattern": f"^{_LABEL_KEY.pattern}$"},
    "additionalProperties": {
        "oneOf": [_LABEL_VALUE, {"type": "array", "items": _LABEL_VALUE, "minItems": 1, "maxItems": _MAX_LABELS}]
    },
}
_WINDOW = {"type": "number", "minimum": 0, "maximum": _MAX_WINDOW}
_JSON_SCHEMA = {
    "type": ["object", "boolean", "null"],
    "description": "a JSON Schema (draft 4 to 2020-12, by its $schema; only '#' references); null: none",
}


def _object(description: str, optional: dict | None = None, **required: dict) -> dict:
    """A JSON object with exactly these members: `required` always, `optional` sometimes."""
    schema = {"type": "object", "description": description, "properties": {**required, **(optional or {})}}
    return {**schema, **({"required": list(required)} if required else {}), "additionalProperties": False}


_JOB_MEMBERS = {
    "id": _ID,
    "type": _TYPE_NAME_SCHEMA,
    "status": {"type": "string", "enum": list(JOB_STATUSES)},
    "parameters": {**_ANY_JSON, "description": "what the job was submitted with, as it was sent"},
    "result": {**_ANY_JSON, "description": "the accepted result (null before)"},
    "error": {**_ANY_JSON, "description": "the last error reported or the expiry (null if none)"},
    "priority": {"type": "integer"},
    "run_at": _TIME,
    "attempts": {"type": "integer", "minimum": 0, "description": "claims so far"},
    "max_attempts": {"type": "integer", "minimum": 1},
    "timeout": {"type": "number", "description": "the lease: seconds without progress before an attempt expires"},
    "created_at": _TIME,
    "updated_at": _TIME,
    "finished_at": _nullable(_TIME),
    "assignee": {"type": ["string", "null"], "description": "the worker of the current or last attempt"},
    "attempt": _nullable({**_ID, "description": "the current attempt's id"}),
    "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 100, "description": "the last percent"},
    "claims": _nullable({**_CLAIMS, "description": "labels a worker needs to take it while its window lasts"}),
    "claim_window": {"type": ["number", "null"], "description": "seconds from run_at it waits for such a worker"},
}
# What an event on /events carries only when the event set it.
_LARGE_JOB_MEMBERS = ("parameters", "result", "error")
_JOB_SPEC_MEMBERS = {
    "type": _TYPE_NAME_SCHEMA,
    "parameters": {**_ANY_JSON, "description": "handed to the worker as is (default {})"},
    "priority": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1, "description": "higher first"},
    "run_at": {
        "description": "not before this time (1970 to 9999); not with delay",
        "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0, "maximum": _LATEST_TIME}],
    },
    "delay": {**_SECONDS, "description": "seconds from now; not with run_at"},
    "max_attempts": _ATTEMPT_BUDGET,
    "timeout": _LEASE,
    "hold": {"type": "boolean", "description": "store it held: never claimed until POST /jobs/{id}/release"},
    "claims": _nullable(
        {**_CLAIMS, "description": "reserve it for workers whose labels match every claim (a list: any of it)"}
    ),
    "claim_window": {**_WINDOW, "description": "seconds from run_at the reservation lasts (default: its type's)"},
}
_OPENAPI_SCHEMAS = {
    "Error": _object(
        "Every refusal: a code for programs and a sentence for people.",
        error={"type": "string"},
        detail={"type": "string"},
    ),
    "Job": _object("A job as stored; unset fields are null.", **_JOB_MEMBERS),
    "ClaimedJob": _object(
        "A job handed to the caller: processing, with its new attempt.", **_JOB_MEMBERS, startedAt=_TIME
    ),
    "Claims": _object(
        "The jobs handed to the caller by a claim with `max`.",
        jobs={
            "type": "array",
            "items": _object(
                "A claimed job and where to report on its attempt.",
                **_JOB_MEMBERS,
                startedAt=_TIME,
                location={"type": "string", "description": "/jobs/{id}/attempts/{attempt}"},
            ),
        },
    ),
    "Report": {
        "description": "A result or an error of one of the caller's attempts.",
        "oneOf": [
            _object("A result.", job=_REPORTED_ID, attempt=_REPORTED_ID, result=_ANY_JSON),
            _object("An error.", job=_REPORTED_ID, attempt=_REPORTED_ID, error=_ANY_JSON),
        ],
    },
    "ReportOutcome": {
        "description": "What became of one report: 201 and the job, or the status and error it would have got alone.",
        "oneOf": [
            _object("Taken.", status={"const": 201}, job=_schema("Job")),
            _object(
                "Refused; it changed nothing.",
                status={"type": "integer", "enum": [403, 404, 409, 422, 503]},
                error={"type": "string"},
                detail={"type": "string"},
            ),
        ],
    },
    "JobSpec": {
        **_object("A job to submit; the job type's settings and the defaults fill in the rest.", **_JOB_SPEC_MEMBERS),
        "required": ["type"],
        "not": {"required": ["run_at", "delay"]},
        "examples": [{"type": "thumbnail", "parameters": {"src": "a.png"}}, {"type": "report", "delay": 60}],
    },
    "JobList": _object(
        "A page of jobs, newest first.",
        jobs=_list_of("Job"),
        next={"type": ["string", "null"], "description": "the cursor of the next page; null on the last"},
    ),
    "Attempt": _object(
        "One claim of a job.",
        id=_ID,
        job=_ID,
        worker={"type": "string"},
        status={"type": "string", "enum": ["processing", "done", "failed", "expired", "cancelled"]},
        started_at=_TIME,
        finished_at=_nullable(_TIME),
        result=_ANY_JSON,
        error=_ANY_JSON,
    ),
    "Event": _object(
        "The data of an event on GET /events.",
        {"detail": {**_ANY_JSON, "description": "what the event adds, such as a progress event's items"}},
        id=_ID,
        event={"type": "string", "description": "submitted, claimed, progress, done, retrying, expired, ..."},
        at=_TIME,
        job=_object(
            "The job as the event left it: every small field, and of parameters, result and error only those the "
            "event set (all three with submitted; a result or an error with the event that changed it).",
            {name: _JOB_MEMBERS[name] for name in _LARGE_JOB_MEMBERS},
            **{name: member for name, member in _JOB_MEMBERS.items() if name not in _LARGE_JOB_MEMBERS},
        ),
    ),
    "Token": _object(
        "A credential, never with its secret.",
        name=_NAME_SCHEMA,
        role={"type": "string", "enum": list(ROLES)},
        created_at=_TIME,
        last_used_at=_nullable(_TIME),
    ),
    "NewToken": _object(
        "A credential just made; its secret is shown this once.",
        name=_NAME_SCHEMA,
        role={"type": "string", "enum": list(ROLES)},
        secret={"type": "string"},
    ),
    "JobType": _object(
        "A job type's effective settings (its own, else the defaults) and its jobs by status.",
        type=_TYPE_NAME_SCHEMA,
        timeout={"type": "number"},
        max_attempts={"type": "integer"},
        backoff=_object(
            "Retry back-off: base·2^n seconds, at most max.", base={"type": "number"}, max={"type": "number"}
        ),
        paused={"type": "boolean"},
        retain={"type": ["number", "null"], "description": "seconds finished jobs are kept; null: --retain"},
        parameters_schema={**_ANY_JSON, "description": "the JSON Schema submitted parameters must fit (null: none)"},
        result_schema={**_ANY_JSON, "description": "the JSON Schema results must fit (null: none)"},
        labels=_LABELS,
        claim_window={"type": ["number", "null"], "description": "its jobs' default claim window"},
        concurrency={"type": ["integer", "null"], "description": "at most this many processing at once; null: any"},
        configured={"type": "boolean", "description": "whether the type has settings of its own"},
        settings={**_schema("TypeSettings"), "description": "its own settings, as PUT takes them"},
        jobs=_COUNTS,
    ),
    "TypeVersion": _object(
        "One change of a type's settings.",
        version={"type": "integer", "minimum": 1},
        changed_by={"type": "string", "description": "the token (or command) that made it"},
        changed_at=_TIME,
        changed={"type": "array", "items": {"type": "string"}, "description": "the settings it changed"},
        settings={
            "oneOf": [_schema("TypeSettings"), {"type": "null"}],
            "description": "the type's own settings after it; null: the type was deleted",
        },
    ),
    "TypeSettings": {
        **_object(
            "The settings to change; null restores the default, absent ones are kept.",
            {
                "timeout": _nullable(_LEASE),
                "max_attempts": _nullable(_ATTEMPT_BUDGET),
                "backoff": {
                    "type": ["object", "null"],
                    "properties": {"base": _nullable(_SECONDS), "max": _nullable(_SECONDS)},
                    "additionalProperties": False,
                },
                "paused": {"type": "boolean"},
                "retain": {
                    "description": "a duration such as 12h or 7d, or seconds; null: --retain",
                    "type": ["string", "number", "null"],
                    "pattern": f"^{_DURATION_FORM}$",
                    "minimum": 0,
                    "maximum": _LONGEST_DURATION,
                },
                "parameters_schema": _JSON_SCHEMA,
                "result_schema": _JSON_SCHEMA,
                "labels": _nullable(_LABELS),
                "claim_window": _nullable(_WINDOW),
                "concurrency": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": _MAX_CONCURRENCY,
                    "description": "at most this many of its jobs processing at once, across all workers and "
                    "servers on the file; null: no limit",
                },
            },
        ),
        "examples": [
            {"timeout": 60, "max_attempts": 5, "backoff": {"base": 2, "max": 300}, "retain": "1d"},
            {"paused": True},
        ],
    },
    "Worker": _object(
        "A worker seen: its last contact, its running attempts, and its attempts by outcome.",
        name={"type": "string"},
        last_seen_at=_nullable(_TIME),
        working_on={
            "type": "array",
            "items": _object("A running attempt.", job=_ID, type=_TYPE_NAME_SCHEMA, attempt=_ID, since=_TIME),
        },
        done={"type": "integer"},
        failed={"type": "integer"},
        expired={"type": "integer"},
    ),
    "Schedule": _object(
        "A recurring job.",
        name=_NAME_SCHEMA,
        type=_TYPE_NAME_SCHEMA,
        parameters=_ANY_JSON,
        every={"type": "string"},
        timezone={"type": "string"},
        next_run_at=_TIME,
        last_run_at=_nullable(_TIME),
        last_job=_nullable(_ID),
        last_error=_nullable(
            _object(
                "Why the last tick made no job (null once a tick works again): the tick was skipped.",
                tick=_TIME,
                detail={"type": "string"},
            )
        ),
        created_at=_TIME,
    ),
    "ScheduleSettings": {
        **_object(
            "A schedule: a job of `type` with `parameters` at every tick.",
            {
                "parameters": {**_ANY_JSON, "description": "default {}"},
                "timezone": {"type": "string", "description": "an IANA zone for cron lines (default UTC)"},
            },
            type=_TYPE_NAME_SCHEMA,
            every={"type": "string", "description": 'an interval ("10 minutes", "1 day") or a five-field cron line'},
        ),
        "examples": [
            {"type": "backup", "parameters": {"full": True}, "every": "0 3 * * *", "timezone": "Europe/Berlin"},
            {"type": "poll-feeds", "every": "10 minutes"},
        ],
    },
    "Health": _object(
        "Whether the server can do its work.",
        {"detail": {"type": "string", "description": "what is wrong with the database, when something is"}},
        status={"type": "string", "enum": ["ok", "unhealthy"]},
        version={"type": "string"},
        database={"type": "string", "description": "ok, or the error code of what went wrong"},
        reaper={"type": "string", "description": "ok, or what went wrong"},
    ),
    "Stats": _object(
        "What the server holds and does now.",
        up_since=_TIME,
        version={"type": "string"},
        jobs=_COUNTS,
        jobs_by_type={"type": "object", "additionalProperties": _COUNTS},
        counters={"type": "object", "additionalProperties": _COUNTS},
        oldest_pending_age_seconds={"type": "object", "additionalProperties": {"type": "number"}},
        concurrency_limits={
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "each type's concurrency limit, for types that have one",
        },
        waiting_workers={"type": "integer"},
        open_streams={"type": "integer"},
        file_bytes=_COUNTS,
        disk_free_bytes={"type": ["integer", "null"], "description": "free for lazyboss where the database is"},
        reaper_last_run=_nullable(_TIME),
    ),
}


_OPENAPI_SECURITY = {
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "A token's name and secret (curl -u NAME:SECRET). The name is the worker's identity.",
    },
    "bearer": {"type": "http", "scheme": "bearer", "description": "A token's secret alone."},
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": _SESSION_COOKIE,
        "description": "The status page's session, from POST /login; a change also needs csrf.",
    },
    "csrf": {
        "type": "apiKey",
        "in": "header",
        "name": _CSRF_HEADER,
        "description": "The session's CSRF token, which the status page carries in <meta name=csrf-token>.",
    },
}

# Refusals as (status, error code, when): an operation's error responses are made of these.
_BY_CREDENTIALS = (
    (400, "bad_header", "a header is not UTF-8"),
    (400, "bad_credentials", "the Basic credentials are not base64 of name:secret"),
    (401, "unauthorized", "credentials missing or wrong, or the session ended"),
    (403, "forbidden", "the credential's role is below the one the operation needs"),
    (403, "host", "open mode: the request is for a host other than 127.0.0.1, localhost or ::1"),
)
# The 401 that comes with a challenge (WWW-Authenticate); the login form's wrong token comes without.
_CHALLENGED = _BY_CREDENTIALS[2]
_BY_CHANGE = (
    (400, "bad_header", "a header is not UTF-8"),
    (403, "cross_origin", "a browser sent it for a page of another site (Origin is not Host)"),
)
_BY_QUERY = ((400, "bad_query", "a query parameter is not UTF-8"),)
_BY_PATH = ((400, "bad_path", "the path is not UTF-8 (a percent-escape of a byte that is not)"),)
_BY_SESSION_CHANGE = ((403, "csrf", "made with the session cookie, without its X-CSRF-Token"),)
_BY_BODY = (
    (413, "too_large", "the body is over --max-body"),
    (415, "unsupported_media_type", "the body is not of a media type the operation takes"),
)
_BY_JSON_BODY = (
    *_BY_BODY,
    (400, "bad_json", "the body is not JSON, nests deeper than 100 levels, or has a number beyond a double"),
)
_BY_INVALID = ((422, "invalid", "a field or parameter of the wrong type or value, named in detail"),)
_BY_STREAM = ((503, "busy", "all threads for streams and long polls are taken: retry after Retry-After"),)
# Every route that reads or writes the database (any with a role, and the page's): its file may fail.
_BY_STORAGE = (
    (507, "storage_full", "the disk holding the database is full: nothing was written"),
    *(
        (503, code, "the database file cannot do it: nothing was written (see /health)")
        for code in (
            "read_only",
            "io_error",
            "database_corrupt",
            "not_a_database",
            "cannot_open",
            "database_gone",
            "database_overwritten",
        )
    ),
    (503, "database_busy", "another process held the database's write lock too long: nothing was written"),
)
_BY_SCHEMA = (
    (503, "schema_unsupported", "the type has a JSON Schema and this server lacks the schema extra to check it"),
)
_REFUSAL_HEADERS = {
    401: {"WWW-Authenticate": "Basic and Bearer, when credentials were missing or wrong"},
    503: {"Retry-After": "seconds to wait before trying again"},
}


def _refusal_responses(refusals: list[tuple[int, str, str]], media_types: tuple[str, ...]) -> dict:
    """The error responses of these refusals, one per status, each naming its error codes."""
    by_status: dict[int, dict[str, str]] = {}
    for status, code, when in refusals:
        codes = by_status.setdefault(status, {})
        codes[code] = f"{codes[code]}, or {when}" if code in codes and when not in codes[code] else when
    responses = {}
    for status, codes in sorted(by_status.items()):
        schema = {"allOf": [_schema("Error")], "properties": {"error": {"enum": list(codes)}}}
        response = {
            "description": "; ".join(f"`{code}`: {when}" for code, when in codes.items()),
            "content": {
                media: {"schema": schema if media == "application/json" else {"type": "string"}}
                for media in media_types
            },
        }
        if status in _REFUSAL_HEADERS and (status != 401 or _CHALLENGED in refusals):
            response["headers"] = _headers(_REFUSAL_HEADERS[status])
        responses[str(status)] = response
    return responses


@dataclass(frozen=True)
class _Route:
    """A route of the API: method, path (Bottle's syntax), handler, the least role that may call it (None:
    anyone, or the page's own checks), its OpenAPI operation, and its refusals besides those that the role,
    the method and a JSON body imply."""

    method: str
    path: str
    handler: Callable
    role: str | None
    operation: dict
    refusals: tuple = ()
    page: bool = False  # answers a browser (Accept: text/html) in HTML, refusals too


_ROUTE_PARAMETER = r"<(\w+)(?::\w+)?>"  # in Bottle's syntax: a name, and maybe a filter (`id`: digits)
_OPENAPI_TAGS = {
    "": "page",
    "login": "page",
    "logout": "page",
    "health": "monitoring",
    "stats": "monitoring",
    "metrics": "monitoring",
    "openapi.json": "monitoring",
}


_JOB_ID = _parameter("path", "job_id", "A job's id.", _ID, required=True, example="1")
_ATTEMPT_ID = _parameter(
    "path", "attempt_id", "An attempt's id, counted per job from 1.", _ID, required=True, example="1"
)
_TYPE_PATH = _parameter("path", "name", "A job type's name.", _TYPE_NAME_SCHEMA, required=True)
_SCHEDULE_PATH = _parameter("path", "name", "A schedule's name.", _NAME_SCHEMA, required=True)
_TOKEN_PATH = _parameter("path", "name", "A token's name.", _NAME_SCHEMA, required=True)
_EVENT_ID = {"type": "string", "pattern": r"^\s*[0-9]{0,18}\s*$", "description": "empty: none"}
_LAST_EVENT_ID = (
    _parameter("header", "Last-Event-ID", "Resume after this event id (EventSource sends it).", _EVENT_ID),
    _parameter("query", "last_event_id", "The same as Last-Event-ID, for clients that cannot send it.", _EVENT_ID),
)
_TYPE_FILTER = _repeated("type", "Only these job types.", _TYPE_NAME_SCHEMA)
_CLAIM_COUNT = {"type": "integer", "minimum": 1, "maximum": _MAX_CLAIM}


def _label_filter(description: str) -> dict:
    """A repeatable `label=key:value` query parameter."""
    return _repeated("label", description, {"type": "string", "pattern": f"^{_LABEL_KEY.pattern}:"})


_EVENT_STREAM = {
    "type": "string",
    "description": "text/event-stream: `retry:` first, then `id:` and `data:` per event, `: keep-alive` comments",
}
_UNKNOWN_JOB = ((404, "not_found", "no such job"),)
_UNKNOWN_ATTEMPT = ((404, "not_found", "no such job or attempt"),)
_UNKNOWN_TYPE = ((404, "not_found", "no such job type: none configured and no jobs of it"),)
_UNKNOWN_SCHEDULE = ((404, "not_found", "no such schedule"),)
_REPORT_REFUSALS = (
    (403, "forbidden", "the attempt belongs to another worker"),
    *_UNKNOWN_ATTEMPT,
    (409, "expired", "the attempt's lease ran out: its job went on without it"),
    (409, "cancelled", "the job was cancelled: stop the work"),
    (409, "finished", "the attempt already ended otherwise"),
)
_STATUS_CHANGE_REFUSALS = (*_UNKNOWN_JOB, (409, "conflict", "the job's status does not allow it"))
_LOGIN_ANSWER = _answer(
    "Logged in (or out): back to the page.",
    headers={"Location": "/", "Set-Cookie": "the session cookie (Max-Age=0 to forget it)"},
)

_OPENAPI_INTRODUCTION = """A job server for small hosts: clients submit jobs, workers claim them by long \
polling and report progress, results and errors.

Credentials: a token's secret as Bearer, or its name and secret as Basic; or the status page's session \
cookie from POST /login, with which a change also needs the X-CSRF-Token header. Roles rank client < worker \
< admin; each operation names the least one it needs in `x-lazyboss-role` and in its security requirements. \
Open mode: while no token exists, the server listens on loopback only and anyone may do anything, with or \
without credentials.

Every refusal is JSON `{"error": code, "detail": sentence}`; each response lists its codes. Besides those, \
an unknown path gets 404 `not_found`, a method a path lacks 405 `method_not_allowed` (with Allow), a \
body over 4 times --max-body 413 `too_large` before it is read, a request line and headers over 64 KiB 431 \
`headers_too_large`, a malformed request 400 `bad_request`, and a transfer coding other than chunked 501 \
`not_implemented`."""


# The API: `make_app` serves these routes, GET /openapi.json describes them. To add a route, add its
# `_Route` here: method, path, the `_Api` method answering it, the least role, and its operation with a
# summary, its parameters (path parameters named job_id or attempt_id are added), its body and its
# answers; list its refusals as (status, code, when) besides those its role, method and JSON body imply.
# tests/test_openapi.py checks the document, and the schemathesis run holds the server to it.
_ROUTES = (
    _Route(
        "POST",
        "/jobs",
        _Api.submit,
        "client",
        {
            "summary": "Submit a job, or a batch of jobs in one transaction",
            "description": "A JSON object is one job; a JSON array (or application/x-ndjson, a job per line) "
            "is a batch, taken all or nothing. 202 means committed to disk.",
            "parameters": [
                _parameter(
                    "header",
                    "Idempotency-Key",
                    "Names the submission: sent again with the same shape (one job, or a list of as many), it "
                    "gets the jobs the first one made, never new ones.",
                    {"type": "string", "minLength": 1, "maxLength": 200},
                )
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [_schema("JobSpec"), {**_list_of("JobSpec"), **_BATCH_SIZE}]}
                    },
                    "application/x-ndjson": {"schema": {**_list_of("JobSpec"), **_BATCH_SIZE}},
                },
            },
            "responses": {
                "202": _answer(
                    "The job (or, for a batch, the list of jobs) as stored.",
                    {"oneOf": [_schema("Job"), _list_of("Job")]},
                    headers={"Location": "the job's URL (one job only)"},
                    links=_links("get_job", "list_attempts", "cancel", "retry", "release", job_id="/id"),
                )
            },
        },
        (
            *_BY_INVALID,
            *_BY_SCHEMA,
            (422, "invalid_parameters", "parameters do not fit the type's parameters_schema (path and rule in detail)"),
            (413, "too_many_jobs", "a batch of more than 10,000 jobs"),
            (409, "key_reused", "the Idempotency-Key named a submission of another shape"),
            (409, "key_expired", "the Idempotency-Key named a batch some of whose jobs were deleted since"),
        ),
    ),
    _Route(
        "GET",
        "/jobs",
        _Api.list_jobs,
        "client",
        {
            "summary": "List jobs, newest first",
            "parameters": [
                _repeated("status", "Only jobs in these statuses.", {"type": "string", "enum": list(JOB_STATUSES)}),
                _TYPE_FILTER,
                _parameter(
                    "query",
                    "limit",
                    "Jobs per page.",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                ),
                _parameter("query", "cursor", "The `next` of the page before.", {"type": "string"}),
            ],
            "responses": {"200": _answer("A page of jobs.", _schema("JobList"))},
        },
        (*_BY_INVALID, (400, "bad_cursor", "the cursor is not one this server gave")),
    ),
    _Route(
        "DELETE",
        "/jobs",
        _Api.purge,
        "admin",
        {
            "summary": "Delete the jobs of these types and statuses (never running ones), with all they left",
            "parameters": [
                {**_TYPE_FILTER, "required": True},
                {
                    **_repeated(
                        "status",
                        "Of these statuses (never processing: cancel running jobs first).",
                        {"type": "string", "enum": [status for status in JOB_STATUSES if status != "processing"]},
                    ),
                    "required": True,
                },
                _parameter(
                    "query",
                    "older_than",
                    "Only jobs older than this, such as 7d: finished ones since they finished, others since submitted.",
                    {"type": "string", "pattern": f"^{_DURATION_FORM}$"},
                ),
            ],
            "responses": {
                "200": _answer(
                    "How many were deleted.", _object("The count.", deleted={"type": "integer", "minimum": 0})
                )
            },
        },
        _BY_INVALID,
    ),
    _Route(
        "POST",
        "/jobs/attempt",
        _Api.claim,
        "worker",
        {
            "summary": "Claim the next job (or with `max`, up to that many), waiting up to `wait` seconds",
            "description": "A job becomes processing under a new attempt of the caller's. Higher priority "
            "first, then the one due first. `wait` is capped by --max-wait; a waiting worker gets a job "
            "submitted meanwhile at once. With `max` the answer is a list, even of one.",
            "parameters": [
                _repeated("type", "Only jobs of these types.", {"type": "string"}),
                _parameter("query", "wait", "Seconds to wait for a job (default 0).", {"type": "number", "minimum": 0}),
                _parameter("query", "max", "Claim up to this many due jobs at once.", _CLAIM_COUNT),
                _label_filter("The worker's labels, as key:value: jobs reserved by matching claims are its too."),
            ],
            "requestBody": _json_body(
                _nullable(
                    _object(
                        "The same as the query parameters, which it adds to.",
                        {
                            "wait": {"type": "number", "minimum": 0},
                            "types": {"type": "array", "items": {"type": "string"}},
                            "max": _CLAIM_COUNT,
                            "labels": {**_LABELS, "description": "the worker's labels"},
                        },
                    )
                ),
                "Optional (empty or null: none).",
                required=False,
            ),
            "responses": {
                "201": _answer(
                    "The job, now processing, with its attempt; with `max`, the jobs.",
                    {"oneOf": [_schema("ClaimedJob"), _schema("Claims")]},
                    headers={"Location": "/jobs/{id}/attempts/{attempt}, where to report (without `max`)"},
                    links=_links(
                        "put_result",
                        "put_error",
                        "put_progress",
                        "get_attempt",
                        "get_log",
                        job_id="/id",
                        attempt_id="/attempt",
                    ),
                ),
                "204": _answer("No job came within `wait`, or the server is stopping."),
            },
        },
        (*_BY_INVALID, *_BY_STREAM),
    ),
    _Route(
        "POST",
        "/jobs/reports",
        _Api.post_reports,
        "worker",
        {
            "summary": "Report results and errors of many attempts in one transaction",
            "description": "Each report is judged alone, as its own PUT would be: a refused one changes nothing "
            "and stops none of the others.",
            "requestBody": {
                "description": "The reports: a JSON list, or application/x-ndjson, a report per line.",
                "required": True,
                "content": {
                    media: {"schema": {**_list_of("Report"), "minItems": 1}}
                    for media in ("application/json", "application/x-ndjson")
                },
            },
            "responses": {
                "200": _answer(
                    "What became of each report, in order.",
                    _object("The outcomes.", reports=_list_of("ReportOutcome")),
                )
            },
        },
        _BY_INVALID,
    ),
    _Route(
        "GET",
        "/jobs/<job_id:id>",
        _Api.get_job,
        "client",
        {
            "summary": "A job; with Accept: text/event-stream, the job and then every change of it",
            "description": "The stream sends the job as it is (as the event that made it so), then the job "
            "after each change, and ends after done, failed or cancelled. Each event's data is a Job.",
            "parameters": list(_LAST_EVENT_ID),
            "responses": {
                "200": {
                    "description": "The job, or its stream.",
                    "content": {
                        "application/json": {"schema": _schema("Job")},
                        "text/event-stream": {"schema": {**_EVENT_STREAM, "x-data": _schema("Job")}},
                    },
                },
                "204": _answer("A stream asked for a finished job after its last event: nothing more will come."),
            },
        },
        (*_UNKNOWN_JOB, (422, "invalid", "the Last-Event-ID is not an event id (streams only)"), *_BY_STREAM),
    ),
    _Route(
        "POST",
        "/jobs/<job_id:id>/cancel",
        _Api.cancel,
        "admin",
        {
            "summary": "Cancel a pending or processing job",
            "description": "A processing job's attempt gets 409 cancelled on its next report: its worker stops.",
            "responses": {"200": _answer("The job, now cancelled.", _schema("Job"))},
        },
        _STATUS_CHANGE_REFUSALS,
    ),
    _Route(
        "POST",
        "/jobs/<job_id:id>/retry",
        _Api.retry,
        "admin",
        {
            "summary": "Send a failed or cancelled job back to pending, with a fresh attempt budget",
            "responses": {"200": _answer("The job, now pending.", _schema("Job"))},
        },
        _STATUS_CHANGE_REFUSALS,
    ),
    _Route(
        "POST",
        "/jobs/<job_id:id>/release",
        _Api.release,
        "admin",
        {
            "summary": "Make a held job pending, due now; with `wait`, answer once it has finished",
            "parameters": [
                _parameter(
                    "query",
                    "wait",
                    "Seconds to wait for the job to finish (default 0; capped by --max-wait).",
                    {"type": "number", "minimum": 0},
                )
            ],
            "responses": {
                "200": _answer("The job: pending, or with `wait`, finished.", _schema("Job")),
                "202": _answer(
                    "With `wait`: the job, released but not finished when `wait` ran out.",
                    _schema("Job"),
                    headers={"Location": "the job's URL"},
                ),
            },
        },
        (*_STATUS_CHANGE_REFUSALS, *_BY_INVALID, *_BY_STREAM),
    ),
    _Route(
        "GET",
        "/jobs/<job_id:id>/attempts",
        _Api.list_attempts,
        "client",
        {
            "summary": "A job's attempts, oldest first",
            "responses": {"200": _answer("The attempts.", _list_of("Attempt"))},
        },
        _UNKNOWN_JOB,
    ),
    _Route(
        "GET",
        "/jobs/<job_id:id>/attempts/<attempt_id:id>",
        _Api.get_attempt,
        "client",
        {"summary": "One attempt of a job", "responses": {"200": _answer("The attempt.", _schema("Attempt"))}},
        _UNKNOWN_ATTEMPT,
    ),
    _Route(
        "PUT",
        "/jobs/<job_id:id>/attempts/<attempt_id:id>/result",
        _Api.put_result,
        "worker",
        {
            "summary": "Report the attempt's result: the job is done",
            "description": "Only the worker of the job's current attempt may. The same report sent again "
            "gets 201 and changes nothing.",
            "requestBody": _json_body(_ANY_JSON, "The result: any JSON (empty: null).", required=False),
            "responses": {"201": _answer("The job, now done.", _schema("Job"))},
        },
        (
            *_REPORT_REFUSALS,
            *_BY_SCHEMA,
            (422, "invalid_result", "the result does not fit the type's result_schema: the attempt goes on"),
        ),
    ),
    _Route(
        "PUT",
        "/jobs/<job_id:id>/attempts/<attempt_id:id>/error",
        _Api.put_error,
        "worker",
        {
            "summary": "Report the attempt's error: the job is retried later, or fails",
            "description": "With attempts left the job goes back to pending after a back-off; else it fails.",
            "requestBody": _json_body(_ANY_JSON, "The error: any JSON (empty: null).", required=False),
            "responses": {"201": _answer("The job, pending again or failed.", _schema("Job"))},
        },
        _REPORT_REFUSALS,
    ),
    _Route(
        "PUT",
        "/jobs/<job_id:id>/attempts/<attempt_id:id>/progress",
        _Api.put_progress,
        "worker",
        {
            "summary": "Report progress as Server-Sent Events; any call renews the lease",
            "description": "Each event has an id (else the one after the previous, or after Last-Event-Id) "
            "and a name: log_chunk (the default), percent (0 to 100: the job's progress) or any word. Ids "
            "already stored are acknowledged again, not stored twice.",
            "parameters": list(_LAST_EVENT_ID),
            "requestBody": {
                "required": False,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "responses": {
                "202": _answer(
                    "`id: N`, `event: seen`, `data: seen` for each event received.",
                    {"type": "string"},
                    "text/event-stream",
                )
            },
        },
        (
            *_REPORT_REFUSALS,
            (400, "bad_stream", "the body is not UTF-8"),
            (422, "invalid", "an event id, event name or percent that is not one, or a bad Last-Event-Id"),
        ),
    ),
    _Route(
        "GET",
        "/jobs/<job_id:id>/attempts/<attempt_id:id>/log",
        _Api.get_log,
        "client",
        {
            "summary": "The attempt's log chunks, in order",
            "responses": {"200": _answer("The log.", {"type": "string"}, "text/plain")},
        },
        _UNKNOWN_ATTEMPT,
    ),
    _Route(
        "GET",
        "/events",
        _Api.events,
        "client",
        {
            "summary": "Every job event of the server, as Server-Sent Events",
            "description": "From now, or after Last-Event-ID (0: every event kept). It never ends by itself.",
            "parameters": [
                _TYPE_FILTER,
                _repeated("job", "Only events of these jobs.", _ID),
                *_LAST_EVENT_ID,
            ],
            "responses": {
                "200": _answer("The events.", {**_EVENT_STREAM, "x-data": _schema("Event")}, "text/event-stream")
            },
        },
        (
            (404, "not_found", "a job filter is not a job id"),
            (422, "invalid", "the Last-Event-ID is not an event id, or a filter names over 500 values"),
            *_BY_STREAM,
        ),
    ),
    _Route(
        "POST",
        "/tokens",
        _Api.create_token,
        "admin",
        {
            "summary": "Create a credential",
            "description": "The secret is in this answer only; it is stored as a hash. The first token ends open mode.",
            "requestBody": _json_body(
                _object(
                    "The token's name (its worker identity) and role (default worker).",
                    {"role": {"type": "string", "enum": list(ROLES), "default": "worker"}},
                    name=_NAME_SCHEMA,
                ),
                "The token.",
            ),
            "responses": {
                "201": _answer(
                    "The token and its secret.", _schema("NewToken"), links=_links("revoke_token", name="/name")
                )
            },
        },
        (*_BY_INVALID, (409, "exists", "a token of that name exists")),
    ),
    _Route(
        "GET",
        "/tokens",
        _Api.list_tokens,
        "admin",
        {
            "summary": "List credentials (never their secrets)",
            "responses": {"200": _answer("The tokens.", _list_of("Token"))},
        },
    ),
    _Route(
        "DELETE",
        "/tokens/<name>",
        _Api.revoke_token,
        "admin",
        {
            "summary": "Revoke a credential: it stops working at once, with its sessions",
            "parameters": [_TOKEN_PATH],
            "responses": {"204": _answer("Revoked.")},
        },
        ((404, "not_found", "no token of that name"),),
    ),
    _Route(
        "GET",
        "/types",
        _Api.list_types,
        "admin",
        {
            "summary": "List job types",
            "parameters": [_label_filter("Only types that carry every such label, as key:value.")],
            "responses": {"200": _answer("Every configured type or type with jobs.", _list_of("JobType"))},
        },
        _BY_INVALID,
    ),
    _Route(
        "GET",
        "/types/<name>",
        _Api.get_type,
        "admin",
        {
            "summary": "A job type",
            "parameters": [_TYPE_PATH],
            "responses": {"200": _answer("The type.", _schema("JobType"))},
        },
        _UNKNOWN_TYPE,
    ),
    _Route(
        "PUT",
        "/types/<name>",
        _Api.put_type,
        "admin",
        {
            "summary": "Change a job type's settings, or pause it",
            "description": "Applies to jobs submitted afterwards; a paused type's jobs wait.",
            "parameters": [_TYPE_PATH],
            "requestBody": _json_body(_schema("TypeSettings"), "The settings to change."),
            "responses": {
                "200": _answer("The type.", _schema("JobType"), links=_links("get_type", "type_versions", name="/type"))
            },
        },
        (
            *_BY_INVALID,
            (422, "invalid_schema", "a schema is not valid JSON Schema (path and rule in detail)"),
            (422, "schema_unsupported", "a schema was given and this server lacks the schema extra to check it"),
        ),
    ),
    _Route(
        "DELETE",
        "/types/<name>",
        _Api.delete_type,
        "admin",
        {
            "summary": "Forget a job type's settings (a version records it)",
            "parameters": [_TYPE_PATH],
            "responses": {"204": _answer("Deleted.")},
        },
        ((404, "not_found", "no such type is configured"), (409, "has_jobs", "the type still has jobs")),
    ),
    _Route(
        "GET",
        "/types/<name>/versions",
        _Api.type_versions,
        "admin",
        {
            "summary": "Every change of a job type's settings, who made it and when, oldest first",
            "parameters": [_TYPE_PATH],
            "responses": {
                "200": _answer(
                    "The versions.",
                    _object("A type's history.", type={"type": "string"}, versions=_list_of("TypeVersion")),
                )
            },
        },
        ((404, "not_found", "the type's settings were never changed"),),
    ),
    _Route(
        "GET",
        "/workers",
        _Api.list_workers,
        "admin",
        {"summary": "Every worker seen", "responses": {"200": _answer("The workers.", _list_of("Worker"))}},
    ),
    _Route(
        "GET",
        "/schedules",
        _Api.list_schedules,
        "admin",
        {"summary": "List schedules", "responses": {"200": _answer("The schedules, by name.", _list_of("Schedule"))}},
    ),
    _Route(
        "GET",
        "/schedules/<name>",
        _Api.get_schedule,
        "admin",
        {
            "summary": "A schedule",
            "parameters": [_SCHEDULE_PATH],
            "responses": {"200": _answer("The schedule.", _schema("Schedule"))},
        },
        _UNKNOWN_SCHEDULE,
    ),
    _Route(
        "PUT",
        "/schedules/<name>",
        _Api.put_schedule,
        "admin",
        {
            "summary": "Create or replace a schedule; its first tick is the next from now",
            "parameters": [_SCHEDULE_PATH],
            "requestBody": _json_body(_schema("ScheduleSettings"), "The schedule."),
            "responses": {
                "200": _answer(
                    "The schedule.",
                    _schema("Schedule"),
                    links=_links("get_schedule", "run_schedule", "delete_schedule", name="/name"),
                )
            },
        },
        (
            *_BY_INVALID,
            *_BY_SCHEMA,
            (422, "invalid_parameters", "parameters do not fit the type's parameters_schema (path and rule in detail)"),
        ),
    ),
    _Route(
        "DELETE",
        "/schedules/<name>",
        _Api.delete_schedule,
        "admin",
        {
            "summary": "Stop a schedule, and cancel the jobs it made that are still pending",
            "parameters": [
                _SCHEDULE_PATH,
                _parameter(
                    "query",
                    "keep_pending",
                    "true: keep its pending jobs.",
                    {"type": "string", "enum": ["true", "false"], "default": "false"},
                ),
            ],
            "responses": {
                "200": _answer(
                    "Deleted.",
                    _object(
                        "The schedule and how many of its jobs were cancelled.",
                        name={"type": "string"},
                        cancelled={"type": "integer", "minimum": 0},
                    ),
                )
            },
        },
        (*_UNKNOWN_SCHEDULE, *_BY_INVALID),
    ),
    _Route(
        "POST",
        "/schedules/<name>/run",
        _Api.run_schedule,
        "admin",
        {
            "summary": "Submit a schedule's job now, besides its ticks",
            "parameters": [_SCHEDULE_PATH],
            "responses": {
                "202": _answer(
                    "The job.",
                    _schema("Job"),
                    headers={"Location": "the job's URL"},
                    links=_links("get_job", job_id="/id"),
                )
            },
        },
        _UNKNOWN_SCHEDULE,
    ),
    _Route(
        "GET",
        "/health",
        _Api.health,
        None,
        {
            "summary": "Liveness: the database answers and the reaper runs",
            "responses": {
                "200": _answer("Healthy.", _schema("Health")),
                "503": _answer("Unhealthy: what is wrong.", _schema("Health")),
            },
        },
    ),
    _Route(
        "GET",
        "/stats",
        _Api.stats,
        "client",
        {
            "summary": "What the server holds and does now",
            "responses": {"200": _answer("The figures.", _schema("Stats"))},
        },
    ),
    _Route(
        "GET",
        "/metrics",
        _Api.metrics,
        "client",
        {
            "summary": "Prometheus metrics",
            "responses": {"200": _answer("The text exposition format 0.0.4.", {"type": "string"}, "text/plain")},
        },
    ),
    _Route(
        "GET",
        "/openapi.json",
        _Api.openapi,
        None,
        {
            "summary": "This description of the API",
            "responses": {"200": _answer("An OpenAPI 3.1 document.", {"type": "object"})},
        },
    ),
    _Route(
        "GET",
        "/",
        _Api.page,
        None,
        {
            "summary": "The status page (Accept: text/html), or its login form",
            "description": "Authenticates by the session cookie (or Authorization); without one, the login "
            "form. Answers 304 to an If-None-Match of its ETag.",
            "parameters": [_parameter("query", "job", "A job to show in detail.", {"type": "string"})],
            "security": [{}, {"session": []}, {"basic": []}, {"bearer": []}],
            "responses": {
                "200": _answer("The page.", {"type": "string"}, "text/html", headers={"ETag": "the page's version"}),
                "304": _answer("Nothing changed since the ETag sent in If-None-Match."),
            },
        },
        (
            *_BY_CREDENTIALS[:3],
            _BY_CREDENTIALS[4],
            (404, "not_found", "the client does not accept text/html: this is no API resource"),
        ),
        page=True,
    ),
    _Route(
        "POST",
        "/login",
        _Api.login,
        None,
        {
            "summary": "Trade a token's secret for a session cookie",
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": _object("The secret.", token={"type": "string", "minLength": 1})}
                    for media in ("application/x-www-form-urlencoded", "application/json")
                },
            },
            "responses": {"303": _LOGIN_ANSWER},
        },
        (
            (400, "bad_form", "the form is not UTF-8"),
            (401, "unauthorized", "no token has this secret"),
            (409, "open_mode", "no token exists: the page needs no login"),
            (422, "invalid", "no token field"),
        ),
        page=True,
    ),
    _Route(
        "POST",
        "/logout",
        _Api.logout,
        None,
        {"summary": "End this browser's session", "responses": {"303": _LOGIN_ANSWER}},
        page=True,
    ),
)


def _operation(route: _Route) -> dict:
    """A route's OpenAPI operation: its own description, and what its role, method and body imply."""
    operation = dict(route.operation)
    where = f"{route.method} {route.path}"
    answers = operation.get("responses", {})
    if not operation.get("summary") or not any(status < "400" for status in answers):
        raise ValueError(f"{where}: an operation needs a summary and its answers")
    parameters = list(operation.get("parameters", []))
    declared = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
    common = {"job_id": _JOB_ID, "attempt_id": _ATTEMPT_ID}
    for name in reversed(re.findall(_ROUTE_PARAMETER, route.path)):
        if name not in declared:
            if name not in common:
                raise ValueError(f"{where}: describe the path parameter {name!r}")
            parameters.insert(0, common[name])
    refusals = [*route.refusals, *_BY_PATH]
    if any(parameter["in"] == "query" for parameter in parameters):
        refusals += _BY_QUERY
    change = route.method not in _SAFE_METHODS
    if change:
        refusals += _BY_CHANGE
    body = operation.get("requestBody", {}).get("content", {})
    refusals += _BY_JSON_BODY if "application/json" in body else _BY_BODY if body else ()
    if route.role or route.page:
        refusals += _BY_STORAGE
    if route.role:
        refusals += _BY_CREDENTIALS + (_BY_SESSION_CHANGE if change else ())
        session = {"session": [route.role], **({"csrf": []} if change else {})}
        operation["security"] = [{"basic": [route.role]}, {"bearer": [route.role]}, session]
        operation["x-lazyboss-role"] = route.role
        needs = f"Needs a {route.role} token or above (anyone in open mode)."
        operation["description"] = f"{operation.get('description', '')}\n\n{needs}".strip()
    refused = _refusal_responses(refusals, ("application/json", "text/html") if route.page else ("application/json",))
    if set(refused) & set(answers):
        raise ValueError(f"{where}: {sorted(set(refused) & set(answers))} are both answers and refusals")
    section = route.path.split("/")[1]
    return {
        "operationId": route.handler.__name__,
        "tags": [_OPENAPI_TAGS.get(section, section)],
        "security": [],
        **operation,
        "parameters": parameters,
        "responses": {**answers, **refused},
    }


def _openapi_document(routes: tuple[_Route, ...]) -> dict:
    """The OpenAPI 3.1 description of these routes; ValueError for a route described wrongly or not at all."""
    paths: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    for route in routes:
        operation = _operation(route)
        if operation["operationId"] in operations:
            raise ValueError(f"{route.handler.__name__} answers two routes: operation ids must be unique")
        operations[operation["operationId"]] = operation
        paths.setdefault(re.sub(_ROUTE_PARAMETER, r"{\1}", route.path), {})[route.method.lower()] = operation
    for source, operation in operations.items():
        for answer in operation["responses"].values():
            for link in answer.get("links", {}).values():
                target = operations.get(link["operationId"], {"parameters": []})
                if set(link["parameters"]) - {parameter["name"] for parameter in target["parameters"]}:
                    raise ValueError(f"{source}: a link to {link['operationId']} names what it does not take")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lazyboss",
            "version": __version__,
            "license": {"name": "MIT", "identifier": "MIT"},
            "description": _OPENAPI_INTRODUCTION,
        },
        "paths": paths,
        "components": {"schemas": _OPENAPI_SCHEMAS, "securitySchemes": _OPENAPI_SECURITY},
    }


def make_app(store: Store, config: Config | None = None, reaper: Reaper | None = None) -> bottle.Bottle:
    """Build the Bottle application serving `store`."""
    config = config or Config()
    api = _Api(store, config, reaper)
    app = bottle.Bottle()
    app.uninstall(True)  # bottle's JSON and template plugins: every handler answers text it made itself
    app.install(_ApiPlugin(api))
    app.router.add_filter("id", lambda conf: (r"[0-9]+", None, None))  # /jobs/attempt is no job
    for route in _ROUTES:
        app.route(route.path, route.method, MethodType(route.handler, api), role=route.role, page=route.page)

    def default_error(error: bottle.HTTPError) -> str:
        # Bottle's own refusals (unknown route, wrong method, crash) in our JSON shape.
        if error.status_code >= 500:
            _log.error("internal error on %s %s: %s", bottle.request.method, bottle.request.path, error.exception)
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = {404: f"no such resource: {bottle.request.path}", 405: error.body}.get(error.status_code)
        allowed = set(filter(None, bottle.response.get_header("Allow", "").split(",")))
        if "GET" in allowed:  # Bottle answers HEAD wherever GET is, and lists only the routes' methods
            bottle.response.set_header("Allow", ",".join(sorted(allowed | {"HEAD"})))
        bottle.response.content_type = "application/json"
        return _encode({"error": codes.get(error.status_code, "internal_error"), "detail": detail or str(error.body)})

    app.default_error_handler = default_error
    # The route's label in the request metrics: /jobs/<job_id>, without the filter.
    metric_rules = {route.path: re.sub(_ROUTE_PARAMETER, r"<\1>", route.path) for route in _ROUTES}

    @app.hook("before_request")
    def start_clock() -> None:
        bottle.request.environ["lazyboss.started"] = time.perf_counter()

    @app.hook("after_request")
    def log_request() -> None:
        environ = bottle.request.environ
        elapsed = time.perf_counter() - environ.get("lazyboss.started", time.perf_counter())
        route = environ.get("bottle.route")
        status = bottle.response.status_code
        # Labels only from fixed sets: a client inventing methods or paths must not add series.
        method = environ["REQUEST_METHOD"] if environ["REQUEST_METHOD"] in _HTTP_METHODS else "other"
        rule = metric_rules[route.rule] if route else "unmatched"
        api.request_durations.observe((method, rule, f"{status // 100}xx"), elapsed)
        if _log.isEnabledFor(logging.INFO):
            query = environ.get("QUERY_STRING")
            _log.info(
                "%s %s%s %s %.1fms %s",
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", ""),
                f"?{query}" if query else "",
                status,
                elapsed * 1000,
                environ.get("REMOTE_ADDR") or "-",
            )

    return app


# --------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------


_MAX_HEADER_BYTES = 64 << 10


_LINGER_BYTES = 64 << 20  # most of a refused body read and dropped so that its sender hears the 413


class _Request(HTTPRequestParser):
    """waitress's request parser, noting when the request's first byte came; a body refused for its
    Content-Length is left for its connection to drop."""

    def __init__(self, adj: Adjustments, connection: _Connection):
        super().__init__(adj)
        self.started = time.time()  # waitress's clock for connections
        self.connection = connection

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.completed and self.error is not None and self.error.code == 413 and self.content_length:
            # What follows the headers is this body, not a next request.
            body = min(len(data) - consumed, self.content_length)
            if self.content_length - body <= _LINGER_BYTES:
                self.connection.unread = self.content_length - body
            consumed += body
        return consumed


class _Task(WSGITask):
    """waitress's request task: an answer of 503 closes its connection, freeing the socket of a
    client that was told to come back later; the environ says whether the request came over the UNIX
    socket (`lazyboss.unix_socket`); a short answer leaves in one write."""

    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ["lazyboss.unix_socket"] = self.channel.server.family == socket.AF_UNIX
        return environ

    keep_open = False  # while the head of an answer without a body is built: see build_response_header

    def build_response_header(self) -> bytes:
        """The answer's head. waitress closes the connection after any answer without a Content-Length, so
        that its client knows where the body ends; a 204 or 304 has no body to end, and closing after it
        cost a worker polling an empty queue a new connection per poll, and dropped unanswered the
        requests pipelined behind it. It stays open unless the client asked to close."""
        if self.status.startswith("503"):
            self.set_close_on_finish()
        asked_to_close = self.request.headers.get("CONNECTION", "").lower() == "close"
        self.keep_open = not self.has_body and self.version == "1.1" and not asked_to_close
        try:
            return super().build_response_header()
        finally:
            self.keep_open = False

    def set_close_on_finish(self) -> None:
        if not self.keep_open:
            super().set_close_on_finish()

    def write(self, data: bytes) -> None:
        """Send an answer's head with the first of its body in one write (waitress sends each on its own: two
        segments, and two wake-ups of the client, for most answers), where the body's length is known
        and this piece does not pass it; else as waitress does."""
        if (
            self.wrote_header
            or not (self.complete and data and self.has_body)
            or self.chunked_response
            or self.content_length is None
            or len(data) > self.content_length
        ):
            super().write(data)
            return
        head = self.build_response_header()
        self.wrote_header = True
        self.content_bytes_written += len(data)
        self.channel.write_soon(head + data)


class _Refusal(ErrorTask):
    """waitress's answer to a request it refuses before lazyboss sees it (a body over its limit, a request
    line and headers over 64 KiB, a malformed request or chunk, a transfer coding it lacks) in lazyboss's
    shape: JSON `{error, detail}`, not waitress's plain text."""

    CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large", 501: "not_implemented"}

    def execute(self) -> None:
        error = self.request.error
        body = _encode({"error": self.CODES.get(error.code, "internal_error"), "detail": error.body}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Connection(HTTPChannel):
    """waitress's connection, with the parser and the tasks above, no busy loop while a task writes, and
    the rest of a refused body read and dropped (see `received`).

    A task sends what it writes itself. While it does, waitress's loop sees
    the buffer hold data, wakes for the socket being writable, finds the
    buffer locked, and goes round again: with the loop holding the
    interpreter lock in between, the writing thread waits for it, and the
    spin costs more than the request. So the loop leaves the socket alone
    while the task writes, and is woken once it has finished if anything is
    left for it to send (a client reading slowly).
    """

    task_class = _Task
    error_task_class = _Refusal
    task_writing = False
    unread = 0  # bytes of a refused body still to read and drop before the connection closes
    sent_bytes = 0  # what the socket took: all but what the kernel still holds reached the client
    _acknowledged = 0  # of those, as `_kernel_waiting_since` last saw
    _unacknowledged_since: float | None = None

    def parser_class(self, adj: Adjustments) -> _Request:
        """waitress makes each request's parser through this."""
        return _Request(adj, self)

    def received(self, data: bytes) -> bool:
        """Read a request; or drop the rest of a body refused as too large (up to `_LINGER_BYTES`).

        waitress answers a Content-Length over its limit with 413 before the
        body, and closes: a client still sending would see the connection
        reset and never read the answer (a worker would send its result again
        and again). Reading the body to its end lets it hear the 413.
        """
        if self.unread:
            self.unread -= min(len(data), self.unread)
            self.last_activity = time.time()
            return True
        return super().received(data)

    def readable(self) -> bool:
        return bool(self.unread) or super().readable()

    def send_continue(self) -> None:
        if self.request.error is None:  # a refused request gets its answer, not an invitation to send its body
            super().send_continue()

    def write_soon(self, data: bytes) -> int:
        self.task_writing = True
        try:
            written = super().write_soon(data)
        finally:
            self.task_writing = False
        if self.total_outbufs_len:
            self.server.pull_trigger()
        return written

    def _flush_outbufs_below_high_watermark(self) -> None:
        """waitress's wait, in `write_soon`, for the loop to send what a task wrote beyond the buffer's high
        watermark (its client is behind): the loop sends meanwhile, or the task would wait for ever."""
        self.task_writing = False
        try:
            super()._flush_outbufs_below_high_watermark()
        finally:
            self.task_writing = True

    def writable(self) -> bool:
        if self.unread and not self.total_outbufs_len:
            return False  # the 413 has gone: close once the body is read (or the idle timeout ends it)
        return not self.task_writing and bool(super().writable())

    def send(self, data: bytes, do_close: bool = True) -> int:
        """waitress's send, counting what the socket took."""
        sent = super().send(data, do_close)
        self.sent_bytes += sent
        return sent

    def _kernel_waiting_since(self) -> float | None:
        """Since when the kernel has held part of the answer that the client acknowledges none of (its
        receive window is full: it reads nothing), or None when the kernel holds nothing. An answer
        that fits in the kernel's buffers never reaches waitress's, whose bytes `waiting_since` looks at
        first: this is how a stream whose client reads nothing shows then."""
        try:
            held = struct.unpack("i", fcntl.ioctl(self.socket.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except (OSError, ValueError, AttributeError):  # closed meanwhile, or a system without TIOCOUTQ
            return None
        if not held:
            self._unacknowledged_since = None
            return None
        acknowledged = self.sent_bytes - held
        if self._unacknowledged_since is None or acknowledged != self._acknowledged:
            self._acknowledged, self._unacknowledged_since = acknowledged, time.time()
        return self._unacknowledged_since

    def waiting_since(self) -> tuple[float, str] | None:
        """Since when the connection has waited for its client, and for what: "headers" (of a new
        connection, or of a request begun), "idle" (no request running), "reading" (a request runs,
        a long poll or a stream, and its client takes none of the answer); None when it waits for
        nothing from the client."""
        if self.requests:
            held_since = self._kernel_waiting_since()
            if self.total_outbufs_len:  # a client the kernel sees take bytes reads, if too slowly to be sent more yet
                return max(self.last_activity, held_since or 0.0), "reading"
            return None if held_since is None else (held_since, "reading")
        if self.request is not None and not self.request.headers_finished:
            return self.request.started, "headers"
        if self.request is None and self.last_activity == self.creation_time:  # not a byte either way yet
            return self.creation_time, "headers"
        return self.last_activity, "idle"


class _Guard:
    """A listener of waitress's, guarded against sockets held open without a request.

    Between rounds of the loop, `guard` closes a connection that has not sent
    a request's headers within `header_timeout` (counted from the connection's
    start, or from the request's first byte), and one that has had no request
    and no traffic for `idle_timeout`, or whose client has taken none of an
    answer for as long (its request's thread would wait for it for ever).
    Requests still arriving may hold `UNFINISHED_BODIES` × `max_body` bytes
    together (waitress buffers them in memory, then in temporary files); past
    that, the ones begun longest ago are closed. When `max_connections` are
    open it closes the one that has waited longest for its client, so the next
    can be accepted. A connection whose request runs (a long poll, a stream)
    and whose client reads is never closed by any.

    Closing is at once, not waitress's `will_close` (which waits until the
    socket takes more data: a client that reads nothing would keep it
    forever), and never inside a round: a descriptor closed there could be
    reused by a connection accepted in the same round and then closed by the
    round's stale poll result.

    Listeners of one server (TCP and a UNIX socket) share the loop's map, the
    threads and one table of connections (`beside`): the limits count them all,
    and the first listener's `guard` sees every connection.
    """

    channel_class = _Connection
    UNFINISHED_BODIES = 16
    OUT_OF_FILES_PAUSE = 0.1  # seconds without accepting after the process found it could open no more files
    out_of_files_until = 0.0
    active_channels: dict
    task_dispatcher: Any

    def _guard_with(self, config: Config, beside: _Guard | None) -> None:
        if beside is not None:
            self.active_channels = beside.active_channels
        self.max_connections = config.max_connections
        self.timeouts = {"headers": config.header_timeout, "idle": config.idle_timeout, "reading": config.idle_timeout}
        self.unfinished_budget = self.UNFINISHED_BODIES * config.max_body
        self.next_sweep = 0.0
        self.closed: Counter = Counter()  # connections closed since the last sweep, by why

    @staticmethod
    def _sharing(beside: _Guard | None) -> dict:
        """What a listener beside another takes from it: the loop's map and the threads."""
        return {} if beside is None else {"map": beside._map, "dispatcher": beside.task_dispatcher}  # type: ignore[attr-defined]

    def readable(self) -> bool:
        """Accept while there is room (waitress's own check also runs its idle timeout, replaced here)."""
        room = len(self.active_channels) < self.max_connections and time.time() >= self.out_of_files_until
        return self.accepting and room

    def accept(self) -> tuple[socket.socket, Any] | None:
        """waitress's accept, but when the process may open no more files (ulimit -n: the temporary files
        of answers clients do not read count too), the connection waiting longest for its client makes
        room, as at --max-connections; if none waits, none is accepted for a moment. waitress logged a
        traceback and tried again at once: a core spun, and the log grew by megabytes a second."""
        try:
            return super().accept()  # type: ignore[misc]
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        if self._make_room():
            self.closed["files"] += 1
        else:  # every connection is busy: wait for one to end rather than spin
            self.out_of_files_until = time.time() + self.OUT_OF_FILES_PAUSE
            self.closed["no_files"] += 1
        return None

    def guard(self) -> None:
        """Once a second close the connections that overstayed; at the limit, the one waiting longest."""
        now = time.time()
        if now >= self.next_sweep:
            self.next_sweep = now + 1.0
            for channel in list(self.active_channels.values()):
                waiting = channel.waiting_since()
                if waiting is not None and now - waiting[0] > self.timeouts[waiting[1]]:
                    channel.handle_close()
                    self.closed[waiting[1]] += 1
            self._trim_unfinished()
            self._report_closed()
        if len(self.active_channels) >= self.max_connections and self._make_room():
            self.closed["room"] += 1

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its client, if one waits (else every one has a
        request running: the next waits in the listen backlog); whether one was closed."""
        waiting = [
            (found[0], channel)
            for channel in self.active_channels.values()
            if (found := channel.waiting_since()) and found[1] != "reading"
        ]
        if waiting:
            min(waiting, key=lambda pair: pair[0])[1].handle_close()
        return bool(waiting)

    def _trim_unfinished(self) -> None:
        """Close requests still arriving, the ones begun longest ago first, until they hold no more than
        the budget."""
        unfinished = [
            (channel.request, channel)
            for channel in list(self.active_channels.values())
            if channel.request is not None and not channel.requests
        ]
        held = sum(request.header_bytes_received + request.body_bytes_received for request, _ in unfinished)
        for request, channel in sorted(unfinished, key=lambda pair: pair[0].started):
            if held <= self.unfinished_budget:
                break
            held -= request.header_bytes_received + request.body_bytes_received
            channel.handle_close()
            self.closed["bytes"] += 1

    def _report_closed(self) -> None:
        """Log the unusual closes of the last second: a careless or hostile client, or too many clients."""
        if self.closed.keys() - {"idle"}:
            reasons = {
                "headers": f"no complete headers within {self.timeouts['headers']:g} s",
                "room": f"waited longest with {self.max_connections} open",
                "bytes": f"begun longest ago of requests holding over {self.unfinished_budget} bytes",
                "idle": f"idle for {self.timeouts['idle']:g} s",
                "reading": f"took no answer for {self.timeouts['idle']:g} s",
                "files": "waited longest when the process could open no more files (ulimit -n)",
                "no_files": "times none could close: no more files to open (ulimit -n), every connection busy",
            }
            closed = ", ".join(f"{number} {reasons[why]}" for why, number in sorted(self.closed.items()))
            _log.warning("closed connections: %s", closed)
        self.closed.clear()


class _GuardedServer(_Guard, TcpWSGIServer):
    """waitress's TCP listener, guarded (see `_Guard`): on `--host` and `--port`, or on systemd's socket."""

    def __init__(
        self,
        app: Callable,
        config: Config,
        listener: socket.socket | None,
        beside: _Guard | None = None,
        **settings: Any,
    ):
        if listener is not None:  # handed over by systemd
            adj = Adjustments(sockets=[listener], **settings)
            sockinfo = (listener.family, listener.type, listener.proto, listener.getsockname())
        else:  # "localhost" could mean two sockets (IPv4 and IPv6); one is enough
            host = "127.0.0.1" if config.host == "localhost" else config.host
            adj = Adjustments(host=host, port=config.port, **settings)
            sockinfo = adj.listen[0]
        sharing = self._sharing(beside)
        super().__init__(app, adj=adj, sockinfo=sockinfo, _sock=listener, bind_socket=listener is None, **sharing)
        self._guard_with(config, beside)


class _GuardedUnixServer(_Guard, UnixWSGIServer):
    """waitress's UNIX socket listener, guarded (see `_Guard`), on a socket `_unix_listener` made."""

    def __init__(
        self, app: Callable, config: Config, listener: socket.socket, beside: _Guard | None = None, **settings: Any
    ):
        adj = Adjustments(sockets=[listener], **settings)
        sockinfo = (socket.AF_UNIX, socket.SOCK_STREAM, None, None)
        super().__init__(app, adj=adj, sockinfo=sockinfo, _sock=listener, bind_socket=False, **self._sharing(beside))
        self._guard_with(config, beside)


def _unix_listener(path: str, mode: int) -> tuple[socket.socket, tuple[int, int]]:
    """A UNIX socket bound at `path` with file mode `mode`, and the (device, inode) of its file.

    A socket file that nobody answers on (left by a server that died) is
    replaced; one a live server answers on, or a file that is not a socket,
    is not: OSError, with the path as its filename, says why.
    """
    try:
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(errno.EEXIST, "a file that is not a socket is there")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except ConnectionRefusedError:
                    os.unlink(path)  # nobody listens: a dead server's
                else:
                    raise OSError(errno.EADDRINUSE, "another server answers on it")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Created with no access at all, then given its mode: nobody may connect before it has it.
            previous = os.umask(0o777)
            try:
                listener.bind(path)
            finally:
                os.umask(previous)
            os.chmod(path, mode)
            status = os.stat(path)
        except OSError:
            listener.close()
            raise
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from None
    return listener, (status.st_dev, status.st_ino)


class Server:
    """waitress serving a lazyboss app on a port, a UNIX socket or both, with an orderly stop from any thread or
    signal."""

    def __init__(
        self, store: Store, config: Config, reaper: Reaper | None = None, listener: socket.socket | None = None
    ):
        self.store = store
        self.config = config
        self.app = make_app(store, config, reaper)
        settings = dict(
            threads=config.threads,
            ident="lazyboss",
            # Bodies up to 4x the limit reach the app and get a JSON 413;
            # larger ones are refused by waitress before they are read.
            max_request_body_size=max(4 * config.max_body, config.max_body + (1 << 20)),
            # A request line and headers beyond this get waitress's 431; what lazyboss takes fits
            # easily, and a connection still sending them holds no more.
            max_request_header_size=_MAX_HEADER_BYTES,
            clear_untrusted_proxy_headers=True,
            # Keep reading while a request runs, so a stream notices its client leave.
            channel_request_lookahead=1,
        )
        self.host: str | None = None
        self.port: int | None = None
        self._unix_socket: tuple[str, tuple[int, int]] | None = None  # its path, and its file's identity
        listeners: list[_Guard] = []
        activated_unix = listener is not None and listener.family == socket.AF_UNIX
        try:
            if activated_unix:  # systemd's (ListenStream=/PATH): it made the file, and keeps it for the next start
                listeners.append(_GuardedUnixServer(self.app, config, listener, **settings))
                listener = None
            elif config.unix_socket:
                sock, identity = _unix_listener(config.unix_socket, int(config.unix_socket_mode, 8))
                self._unix_socket = (config.unix_socket, identity)
                listeners.append(_GuardedUnixServer(self.app, config, sock, **settings))
            if listener is not None or config.port is not None:
                tcp = _GuardedServer(self.app, config, listener, listeners[0] if listeners else None, **settings)
                self.host, self.port = tcp.effective_host, int(tcp.effective_port)  # getnameinfo gives text
                listeners.append(tcp)
        except BaseException:
            for made in listeners:
                made.close()
            self._remove_unix_socket()
            raise
        if not listeners:
            raise ValueError("nothing to listen on: give a port, a UNIX socket or both")
        self.waitress = listeners[0]  # the first guards every connection; the loop's map has them all
        self.addresses = ([f"unix:{config.unix_socket}"] if config.unix_socket else []) + (
            [f"http://{self.host}:{self.port}"] if self.port is not None else []
        )
        self._stop_requested = False  # a plain flag: safe to set from a signal handler

    def run(self, grace: float = 10.0) -> None:
        """Serve until `stop`; then let running requests finish (at most `grace` s) and close."""
        connections = self.waitress._map
        # poll(2), not select(2): select cannot watch a descriptor numbered 1024 or more.
        while not self._stop_requested:
            wasyncore.loop(timeout=1.0, map=connections, count=1, use_poll=True)
            self.waitress.guard()
        self.store.stop_waiting()
        deadline = time.monotonic() + grace
        while self._busy() and time.monotonic() < deadline:
            wasyncore.loop(timeout=0.05, map=connections, count=1, use_poll=True)
        self.waitress.task_dispatcher.shutdown(timeout=max(0.0, deadline - time.monotonic()))
        wasyncore.close_all(connections)
        self._remove_unix_socket()

    def _remove_unix_socket(self) -> None:
        """Delete the UNIX socket's file, if it is still the one this server made (not a successor's)."""
        if self._unix_socket is None:
            return
        path, identity = self._unix_socket
        with suppress(OSError):
            status = os.stat(path)
            if (status.st_dev, status.st_ino) == identity:
                os.unlink(path)

    def _busy(self) -> bool:
        """Whether a request is still being answered or its answer still being sent."""
        return any(channel.requests or channel.total_outbufs_len for channel in self.waitress.active_channels.values())

    def stop(self) -> None:
        """Ask `run` to wind down: no more claims, waiting workers get 204 at once."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self.store.stop_waiting()
        try:
            self.waitress.pull_trigger()  # wake the loop now rather than at its next timeout
        except OSError:
            pass  # the loop saw the flag by itself and has closed its trigger already


def _allow_open_files(config: Config) -> str | None:
    """Raise the open-file limit to what the settings need (a socket per connection, SQLite's files
    per thread, a few more), and as far as the hard limit allows to room for a temporary file per
    connection too (waitress keeps an answer its client does not read in one); if the hard limit is
    below the need, say why not."""
    needed = config.max_connections + 2 * config.threads + 64
    wanted = needed + config.max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return (
            f"--max-connections {config.max_connections} with --threads {config.threads} needs {needed} "
            f"open files, and this process may open only {hard} (ulimit -n; LimitNOFILE= under systemd)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    return None


_EXIT_CANNOT_START = 1  # the host is not ready (a busy port, the database file): systemd tries again
# A database file that no waiting mends: exit 2, as for a mistake in the settings.
_UNFIT_FILES = {"permission_denied", "not_a_database", "foreign_database", "schema_too_new", "database_corrupt"}


def _open_store(config: Config) -> Store | int:
    """The store on `--db`, or the exit status after saying in one line on stderr why it cannot be used."""
    try:
        return Store(config.db, config.sync)
    except StorageError as error:
        print(f"lazyboss: cannot use the database {_engine_for(config.db)}: {error.detail}", file=sys.stderr)
        return 2 if error.code in _UNFIT_FILES else _EXIT_CANNOT_START


# glibc's mallopt option for the most memory arenas (M_ARENA_MAX in malloc.h).
_M_ARENA_MAX = -8


def _few_malloc_arenas() -> None:
    """Let glibc's allocator keep 2 arenas, as MALLOC_ARENA_MAX=2 would, unless that variable says otherwise.

    By default each thread that allocates may get an arena of its own (up to 8 per core), and
    each keeps what it freed: after 30 submits of 1 MB the server held 312 MiB at idle with
    them, 98 MiB with 2 (bench/large_answers.py), and no request was slower. Not glibc (musl,
    macOS): nothing to do.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes  # only here: the server's one use of it

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def serve(config: Config) -> int:
    """Run the server until SIGTERM or SIGINT; return the exit status."""
    _few_malloc_arenas()  # before waitress starts its threads, whose arenas it bounds
    problem = _allow_open_files(config)
    if problem:
        print(f"lazyboss: {problem}", file=sys.stderr)
        return 2
    listener = _activated_socket()
    if listener is not None and listener.family == socket.AF_UNIX:  # served as --unix-socket is, and only it
        name = listener.getsockname()  # text, or the bytes of an abstract name (ListenStream=@NAME)
        config = replace(config, unix_socket=name if isinstance(name, str) else "@" + os.fsdecode(name[1:]), port=None)
    elif listener is not None:
        config = replace(config, host=listener.getsockname()[0])
    store = _open_store(config)
    if isinstance(store, int):
        return store
    tcp = listener.family != socket.AF_UNIX if listener is not None else config.port is not None
    if tcp and not _is_loopback(config.host) and not store.has_tokens():
        store.close()
        print(
            f"lazyboss: refusing to listen on {config.host}: no token exists, so anyone could take jobs. "
            f"Create one first (lazyboss --db {store.engine} token create --role admin --name me) "
            "or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    notifier = SystemdNotifier()
    reaper = Reaper(store, config.reap_interval, parse_duration(config.retain), notifier)
    try:
        server = Server(store, config, reaper, listener)
    except OSError as error:
        store.close()
        where = error.filename or f"{config.host}:{config.port}"  # a UNIX socket's errors name its path
        print(f"lazyboss: cannot listen on {where}: {error.strerror or error}", file=sys.stderr)
        return _EXIT_CANNOT_START
    except ValueError:  # waitress could not resolve the host to an address
        store.close()
        print(f"lazyboss: --host {config.host!r} is not an address or host name to listen on", file=sys.stderr)
        return 2

    def shut_down(signum: int, frame: Any) -> None:
        notifier.notify("STOPPING=1", "STATUS=stopping")
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, shut_down)
    reaper.start()
    _log.info("lazyboss %s serving %s on %s", __version__, store.engine, " and ".join(server.addresses))
    notifier.notify("READY=1", f"STATUS=serving on {' and '.join(server.addresses)}")
    try:
        server.run()
    finally:
        reaper.stop()
        reaper.join(timeout=30)
        store.close()
    _log.info("lazyboss stopped")
    return 0


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

_EXIT_OK, _EXIT_JOB_FAILED, _EXIT_USAGE, _EXIT_SERVER, _EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_DEFAULT_URL = "http://127.0.0.1:8080"
_CONNECT_TIMEOUT = 5.0  # seconds to connect and finish a TLS handshake; then the request's own timeout
_STREAM_TIMEOUT = 120.0  # a stream silent this long is dead: servers send a keep-alive every 15 s
_REFUSALS = {403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid}
_JOB = ("id", "status")  # what every job the server answers with has, for telling it from another server's JSON


def _refusal(status: int, payload: Any) -> LazybossError:
    """The exception for a refusal: NotFound, Conflict, … or the base class, with the server's code and detail."""
    code = payload.get("error") if isinstance(payload, dict) else None
    detail = payload.get("detail") if isinstance(payload, dict) else " ".join(str(payload).split())
    return _REFUSALS.get(status, LazybossError)(str(detail or f"the server answered {status}"), code, status)


def _transient(error: LazybossError) -> bool:
    """Whether the same call may succeed later: no answer, or the server busy or failing."""
    return isinstance(error, Unreachable) or error.status == 429 or (error.status or 0) >= 500


class _Backoff:
    """The wait between tries of a call that keeps failing: from 0.1 s doubling to at most ~5 s, jittered.

    Each wait logs one line, so a server that is down costs a line every few
    seconds per caller, not a loop.
    """

    CAP = 5.0

    def __init__(self, what: str, stop: threading.Event | None = None):
        self.what = what
        self.stop = stop or threading.Event()
        self.failures = 0

    def wait(self, error: Exception) -> bool:
        """Log the failure and wait before the next try; False when `stop` was set meanwhile."""
        self.failures += 1
        delay = min(self.CAP, 0.1 * 2**self.failures) * random.uniform(0.5, 1.0)
        _log.warning("%s: %s; trying again in %.1f s", self.what, error, delay)
        return not self.stop.wait(delay)

    def reset(self) -> None:
        """The call got through."""
        self.failures = 0


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a UNIX socket. Its requests name `localhost` as their Host, as curl --unix-socket does."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _AnswerDeadlines:
    """Cuts a request's connection when its whole answer has not come within its timeout. A socket's
    timeout bounds each read alone: a server (or proxy) dripping a byte every few seconds would hold a
    command, or a worker's claim, for ever. One thread per client looks once a second, only while a
    request is under way (it ends when none is)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, socket.socket, list[bool]]] = {}
        self._watching = False

    def watch(self, sock: socket.socket | None, seconds: float) -> list[bool]:
        """Cut `sock` in `seconds` unless forgotten before; the returned flag is set once it is cut. (No
        socket yet: nothing to cut.)"""
        cut = [False]
        if sock is None:
            return cut
        with self._lock:
            self._watched[id(cut)] = (time.monotonic() + seconds, sock, cut)
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._look, name="lazyboss-answer-deadlines", daemon=True).start()
        return cut

    def forget(self, cut: list[bool]) -> None:
        with self._lock:
            self._watched.pop(id(cut), None)

    def _look(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                if not self._watched:
                    self._watching = False
                    return
                now = time.monotonic()
                for key, (deadline, sock, cut) in list(self._watched.items()):
                    if now >= deadline:
                        del self._watched[key]
                        cut[0] = True
                        with suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)


class Client:
    """The lazyboss HTTP API from Python, on the standard library only.

    `url` is `http://HOST:PORT`, `https://…` or `unix:/PATH/TO/SOCKET`. It,
    `token` and `user` default to `LAZYBOSS_URL`, `LAZYBOSS_TOKEN` and
    `LAZYBOSS_USER` (`NAME:SECRET`, HTTP Basic). Thread-safe: each thread keeps
    its own keep-alive connection. A refusal raises a `LazybossError`
    (`NotFound`, `Conflict`, `Forbidden`, `Invalid`, or the base class) with
    `status`, `code` and `detail`; no answer at all raises `Unreachable`.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, user: str | None = None, *, timeout: float = 30.0
    ):
        url = url or os.environ.get("LAZYBOSS_URL") or _DEFAULT_URL
        if token is None and user is None:
            token, user = os.environ.get("LAZYBOSS_TOKEN"), os.environ.get("LAZYBOSS_USER")
        self._unix_socket = url[len("unix:") :] if url[: len("unix:")].lower() == "unix:" else None
        parts = urllib.parse.urlsplit(
            "http://localhost" if self._unix_socket else url if "://" in url else f"http://{url}"
        )
        if self._unix_socket == "" or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL, nor unix:/PATH/TO/SOCKET")
        self.url = url if self._unix_socket else f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.timeout = timeout
        self._parts = parts
        self._headers = {"User-Agent": f"lazyboss/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user:
            self._headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        self._local = threading.local()
        self._deadlines = _AnswerDeadlines()

    # -- the wire

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection, connected (TLS included) within _CONNECT_TIMEOUT; then reads wait `timeout`."""
        https = self._parts.scheme == "https"
        if self._unix_socket:
            connection: http.client.HTTPConnection = _UnixConnection(self._unix_socket, _CONNECT_TIMEOUT)
        else:
            kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
            connection = kind(self._parts.hostname, self._parts.port, timeout=_CONNECT_TIMEOUT)
        try:
            connection.connect()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            if isinstance(error, FileNotFoundError):
                raise Unreachable(f"cannot reach {self.url}: no such socket (is lazyboss running?)") from None
            if isinstance(error, socket.timeout):
                tls = " or in the TLS handshake (is it an https server?)" if https else ""
                raise Unreachable(
                    f"cannot reach {self.url}: no connection within {_CONNECT_TIMEOUT:g} s{tls}"
                ) from None
            if isinstance(error, ConnectionRefusedError):
                raise Unreachable(f"cannot reach {self.url}: connection refused (is lazyboss running?)") from None
            raise Unreachable(f"cannot reach {self.url}: {error}") from None
        connection.sock.settimeout(timeout)
        return connection

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict,
        within: float,
    ) -> tuple[int, Any]:
        """One request on a connection: (status, parsed JSON or text), or the refusal raised; Unreachable
        (the connection closed) when the whole answer has not come `within` seconds."""
        cut = self._deadlines.watch(connection.sock, within)
        try:
            connection.request(method, path, body=data, headers=headers)
            return self._answer(method, path, connection.getresponse())
        except (OSError, http.client.HTTPException):
            if not cut[0]:
                raise
            connection.close()
            raise Unreachable(f"{method} {path}: no whole answer from {self.url} within {within:g} s") from None
        finally:
            self._deadlines.forget(cut)

    def _answer(self, method: str, path: str, response: http.client.HTTPResponse) -> tuple[int, Any]:
        """A response read whole: (status, parsed JSON or text), or the refusal raised.

        What lazyboss never answers raises Unreachable: a redirect (never
        followed: the credentials go nowhere else), a page or other body that is
        neither JSON nor text, JSON that does not parse.
        """
        payload = response.read()
        status, content_type = response.status, response.getheader("Content-Type", "")
        if 300 <= status < 400:
            raise self._not_lazyboss(method, path, status, f"a redirect to {response.getheader('Location')}")
        parsed: Any = payload.decode("utf-8", "replace")
        if "json" in content_type and payload:
            try:
                parsed = json.loads(payload)
            except ValueError:
                raise self._not_lazyboss(method, path, status, "a body that is not JSON") from None
        elif payload and not content_type.startswith(("text/plain", "text/event-stream")):
            raise self._not_lazyboss(method, path, status, f"a body of type {content_type or 'unknown'}")
        if status >= 400:
            raise _refusal(status, parsed)
        return status, parsed

    def _not_lazyboss(self, method: str, path: str, status: int, what: str) -> Unreachable:
        """The error for an answer that no lazyboss server gives."""
        return Unreachable(
            f"{method} {path}: {self.url} answered {status} with {what}, which lazyboss never sends "
            "(is it lazyboss's address? did a proxy answer?)"
        )

    def _json(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, *, members: tuple = ()
    ) -> Any:
        """The answer of a call that lazyboss answers with a JSON array or, given `members`, an object
        holding them; anything else raises Unreachable."""
        status, answer = self.request(method, path, body, headers)
        if not (
            isinstance(answer, dict) and all(name in answer for name in members)
            if members
            else isinstance(answer, list)
        ):
            noun = f"an object with {', '.join(members)}" if members else "an array"
            raise self._not_lazyboss(method, path, status, f"something other than {noun}")
        return answer

    def request(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float | None = None
    ) -> tuple[int, Any]:
        """Send a request on this thread's keep-alive connection; (status, parsed JSON or text).

        `body` is JSON unless it is bytes (then set the Content-Type in `headers`).
        """
        data = body if isinstance(body, (bytes, type(None))) else _encode(body).encode()
        sent = {
            **self._headers,
            **({"Content-Type": "application/json"} if data and not isinstance(body, bytes) else {}),
        }
        sent.update(headers or {})
        timeout = timeout or self.timeout
        while True:
            connection = getattr(self._local, "connection", None)
            reused = connection is not None and connection.sock is not None
            if not reused:
                connection = self._local.connection = self._connect(timeout)
            connection.sock.settimeout(timeout)
            try:
                return self._exchange(connection, method, path, data, sent, timeout)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self._local.connection = None
                # A kept-alive connection the server closed meanwhile: the request never arrived.
                if reused and isinstance(
                    error, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                ):
                    continue
                if isinstance(error, socket.timeout):
                    raise Unreachable(f"{method} {path}: no answer from {self.url} within {timeout:g} s") from None
                raise Unreachable(f"{method} {path}: lost the connection to {self.url}: {error}") from None

    def _stream(
        self, path: str, last_event_id: str | None = None, deadline: float | None = None
    ) -> Iterator[tuple[str | None, Any]]:
        """A text/event-stream's events as (id, parsed data), until the server answers 204.

        A stream that the server ends after its news (as a job's stream does) is
        asked again at once; one that breaks, after a back-off; both with
        `Last-Event-ID`, so no event is missed. Only the first connection's
        failure is raised, and TimeoutError once the monotonic `deadline` passed.
        """
        backoff, opened = _Backoff(f"the stream {path}"), False
        while True:
            headers = {**self._headers, "Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            connection, delivered = None, False
            try:
                connection = self._connect(_STREAM_TIMEOUT if deadline is None else _time_left(deadline))
                sock = connection.sock  # the response keeps reading it after the connection lets go
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                if response.status == 204:  # nothing will come any more
                    return
                if response.status != 200 or not response.getheader("Content-Type", "").startswith("text/event-stream"):
                    status, _ = self._answer("GET", path, response)  # raises a refusal, or another answer's error
                    raise self._not_lazyboss("GET", path, status, "something other than an event stream")
                opened = True
                event_id, data = None, []
                for raw in response:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        last_event_id = event_id if event_id is not None else last_event_id
                        try:
                            event = json.loads("\n".join(data))
                        except ValueError:
                            raise self._not_lazyboss("GET", path, 200, "an event that is not JSON") from None
                        yield event_id, event
                        data, delivered = [], True
                        backoff.reset()
                    if deadline is not None:
                        sock.settimeout(_time_left(deadline))
                error: Exception = Unreachable("the server ended the stream")
            except (OSError, http.client.HTTPException, Unreachable) as failure:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{path}: the stream did not end in time") from None
                if not opened:
                    raise (
                        failure if isinstance(failure, Unreachable) else Unreachable(f"{self.url}: {failure}")
                    ) from None
                error = failure
            finally:
                if connection is not None:
                    connection.close()
            if not delivered:
                backoff.wait(error)

    # -- jobs

    def submit(
        self,
        type: str,
        parameters: Any = None,
        *,
        priority: int | None = None,
        delay: float | None = None,
        run_at: str | float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        key: str | None = None,
        hold: bool = False,
    ) -> dict:
        """Submit a job; return it as stored. The same `key` (an Idempotency-Key) never makes a second job.
        A job submitted with `hold` waits, `held`, until it is released."""
        options = {"priority": priority, "delay": delay, "run_at": run_at, "max_attempts": max_attempts}
        body = {"type": type, "parameters": {} if parameters is None else parameters, "timeout": timeout, **options}
        body = {name: value for name, value in body.items() if value is not None}
        if hold:
            body["hold"] = True
        return self._json("POST", "/jobs", body, {"Idempotency-Key": key} if key else None, members=_JOB)

    def submit_many(self, jobs: list[dict], *, key: str | None = None) -> list[dict]:
        """Submit jobs (each a dict as `submit` takes it) in one request, all or none; return them."""
        return self._json("POST", "/jobs", list(jobs), {"Idempotency-Key": key} if key else None)

    def get(self, job_id: str) -> dict:
        """A job as it is now."""
        return self._json("GET", f"/jobs/{_quote(job_id)}", members=_JOB)

    def jobs(
        self, status: str | list[str] | None = None, type: str | list[str] | None = None, *, page_size: int = 100
    ) -> Iterator[dict]:
        """Every job (of these statuses and types), newest first, fetched a page at a time."""
        query = (
            [("limit", page_size)] + [("status", s) for s in _as_list(status)] + [("type", t) for t in _as_list(type)]
        )
        cursor = None
        while True:
            page = self._json(
                "GET",
                "/jobs?" + urllib.parse.urlencode(query + ([("cursor", cursor)] if cursor else [])),
                members=("jobs", "next"),
            )
            yield from page["jobs"]
            cursor = page["next"]
            if not cursor:
                return

    def attempts(self, job_id: str) -> list[dict]:
        """A job's attempts, oldest first."""
        return self._json("GET", f"/jobs/{_quote(job_id)}/attempts")

    def log(self, job_id: str, attempt: str) -> str:
        """What an attempt logged."""
        return self.request("GET", f"/jobs/{_quote(job_id)}/attempts/{_quote(attempt)}/log")[1]

    def cancel(self, job_id: str) -> dict:
        """Cancel a pending or processing job (admin)."""
        return self._json("POST", f"/jobs/{_quote(job_id)}/cancel", members=_JOB)

    def retry(self, job_id: str) -> dict:
        """Send a failed or cancelled job back to pending with a fresh attempt budget (admin)."""
        return self._json("POST", f"/jobs/{_quote(job_id)}/retry", members=_JOB)

    def release(self, job_id: str) -> dict:
        """Make a held job pending, due now (admin)."""
        return self._json("POST", f"/jobs/{_quote(job_id)}/release", members=_JOB)

    def purge(self, types: str | list[str], statuses: str | list[str], older_than: str | None = None) -> int:
        """Delete the jobs of these types and statuses (never running ones), and older than a duration
        such as "7d" if given; return how many (admin)."""
        query = [("type", t) for t in _as_list(types)] + [("status", s) for s in _as_list(statuses)]
        query += [("older_than", older_than)] if older_than is not None else []
        return self._json("DELETE", "/jobs?" + urllib.parse.urlencode(query), members=("deleted",))["deleted"]

    def follow(self, job_id: str) -> Iterator[dict]:
        """The job now, then the job at every change, until it is done, failed or cancelled."""
        for _, job in self._stream(f"/jobs/{_quote(job_id)}"):
            yield job

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job once it is done, failed or cancelled, as soon as it is (it follows the job's stream).

        TimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for _, job in self._stream(f"/jobs/{_quote(job_id)}", deadline=deadline):
                if job["status"] in FINISHED_STATUSES:
                    return job
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s") from None
        return self.get(job_id)  # it had finished before the stream was asked again

    def events(
        self, last_event_id: str | None = None, *, types: list[str] | None = None, jobs: list[str] | None = None
    ) -> Iterator[dict]:
        """Every event of the server from now (or after `last_event_id`), for ever: `{id, event, at, job, detail?}`.

        A lost connection is opened again with `Last-Event-ID`: no event is
        missed, even across a restart of the server.
        """
        query = urllib.parse.urlencode([("type", t) for t in types or []] + [("job", j) for j in jobs or []])
        for _, event in self._stream(f"/events?{query}" if query else "/events", last_event_id):
            yield event

    # -- supervising

    def stats(self) -> dict:
        """Counts by type and status, and the server's state (`GET /stats`)."""
        return self._json("GET", "/stats", members=("jobs_by_type",))

    def workers(self) -> list[dict]:
        """Every worker seen, with its current attempts (admin)."""
        return self._json("GET", "/workers")

    def types(self) -> list[dict]:
        """Every job type: its settings and counts (admin)."""
        return self._json("GET", "/types")

    def put_type(self, name: str, **settings: Any) -> dict:
        """Change a type's settings: timeout, max_attempts, backoff, paused, retain, parameters_schema,
        result_schema, labels; None restores a default (admin)."""
        return self._json("PUT", f"/types/{_quote(name)}", settings, members=("type",))

    def delete_type(self, name: str) -> None:
        """Forget a type's settings; Conflict while it has jobs (admin)."""
        self.request("DELETE", f"/types/{_quote(name)}")

    def type_versions(self, name: str) -> list[dict]:
        """Every change of a type's settings, oldest first: version, changed_by, changed_at, changed, settings."""
        return self._json("GET", f"/types/{_quote(name)}/versions", members=("versions",))["versions"]

    def schedules(self) -> list[dict]:
        """Every schedule, with its next and last run (admin)."""
        return self._json("GET", "/schedules")

    def put_schedule(
        self, name: str, type: str, every: str, parameters: Any = None, *, timezone: str | None = None
    ) -> dict:
        """Make or change a schedule: a job of `type` every `every` ("10 minutes", or a cron line) (admin)."""
        body = {"type": type, "every": every, "parameters": {} if parameters is None else parameters}
        return self._json(
            "PUT",
            f"/schedules/{_quote(name)}",
            {**body, **({"timezone": timezone} if timezone else {})},
            members=("name",),
        )

    def delete_schedule(self, name: str, *, keep_pending: bool = False) -> int:
        """Stop a schedule and cancel its pending jobs (unless `keep_pending`); return how many it cancelled (admin)."""
        query = "?keep_pending=true" if keep_pending else ""
        return self._json("DELETE", f"/schedules/{_quote(name)}{query}", members=("cancelled",))["cancelled"]

    def run_schedule(self, name: str) -> dict:
        """Submit a schedule's job now, besides its ticks; return the job (admin)."""
        return self._json("POST", f"/schedules/{_quote(name)}/run", members=_JOB)


def _time_left(deadline: float) -> float:
    """Seconds until a monotonic deadline, a little more than none."""
    return max(0.001, deadline - time.monotonic())


def _quote(part: Any) -> str:
    """A path segment, escaped."""
    return urllib.parse.quote(str(part), safe="")


def _as_list(value: str | list[str] | None) -> list[str]:
    """None, one string or several, as a list."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------
# Worker engine
# --------------------------------------------------------------------------

_BATCH_DELAY = 0.25  # seconds progress may wait before it is sent
_HEARTBEAT = 2.0  # seconds of silence after which the lease is renewed anyway
_PROGRESS_TIMEOUT = 10.0  # seconds a progress request may take
_BATCH_BYTES = 256 * 1024  # most bytes in one progress request, until a 413 says fewer
_SMALLEST_BATCH = 1024
_BACKLOG = 1 << 20  # characters of progress held for the server; beyond that output waits, or is dropped
_KILL_DELAY = 3.0  # seconds between SIGTERM and SIGKILL for a cancelled command, or one stopped at shutdown
_REPORT_GRACE = 10.0  # seconds after the shutdown's kills that reports may still take to get through
_ABANDON_WAIT = 2.0  # seconds the worker waits for calls in flight once it gives up on the server
_EMPTY_CLAIM_PACE = 1.0  # seconds at least from one claim to the next while they come back empty


@dataclass
class _Outcome:
    """What a runner reports: a result or an error, and a smaller one if the server finds it too large."""

    kind: str  # "result" or "error"
    body: Any
    smaller: Callable[[], _Outcome | None] = lambda: None

    def refused(self, detail: str) -> _Outcome:
        """The error to send for this result, which the type's result_schema refused: the job fails (or is
        retried) at once saying why, instead of its attempt running out its lease for the same refusal."""
        reason = {"error": "invalid_result", "detail": detail}
        return _Outcome("error", {**reason, "result": self.body}, lambda: _Outcome("error", reason))


class _Attempt:
    """One claimed job on this worker: its progress on the way to the server, its lease, why it must stop.

    A keeper thread sends what the runner queues (batched, at most
    _BATCH_DELAY behind, each event with its id so a resend is harmless),
    renews the lease when all is quiet, and watches the attempt's limits.
    """

    def __init__(self, engine: _Engine, job: dict):
        self.engine = engine
        self.job = job
        self.path = f"/jobs/{job['id']}/attempts/{job['attempt']}"
        self.started = time.monotonic()
        lease = float(job.get("timeout") or _DEFAULT_TIMEOUT)
        # Wall-clock time the job may run: a command gets its lease's length unless told otherwise.
        self.limit = engine.timeout or (lease if engine.runner.lease_is_limit else math.inf)
        self.heartbeat = min(_HEARTBEAT, lease / 3)  # renew well before a short lease runs out
        self.changed = threading.Condition()
        # [event, pieces of its data] not sent yet: log text is merged (joined once, when it is sent).
        self.queued: list[tuple[str, list[str]]] = []
        self.queued_since: float | None = None
        self.in_flight: list[ProgressItem] = []  # sent, not acknowledged: resent as they are
        self.held = 0  # characters queued or in flight
        self.dropped = 0  # bytes dropped since the last marker
        self.failing = False  # the last send got no answer: the server cannot keep up
        self.next_id = 1
        self.stop_reason: str | None = None  # cancelled, expired, timeout, shutdown
        self.kill_at: float | None = None  # when the work gets ended by force; only ever moves earlier
        self.gone: str | None = None  # why the server takes no more reports on this attempt
        self.closed = False  # the runner is done: what is queued is all there is
        self.keeper = threading.Thread(target=self._keep, name=f"job-{job['id']}", daemon=True)

    # -- what runners call

    def full(self) -> bool:
        """Whether the backlog is full: what comes now is held back, or dropped while the server fails."""
        return self.held >= _BACKLOG

    def holding(self) -> bool:
        """Whether output should wait: the backlog is full and the server is taking it in."""
        return self.full() and not self.failing and self.stop_reason is None and self.keeper.is_alive()

    def wait_for_room(self, timeout: float) -> None:
        """Wait (at most `timeout` s) while output should wait."""
        with self.changed:
            self.changed.wait_for(lambda: not self.holding(), timeout)

    def drop(self, size: int) -> None:
        """Note `size` bytes of output that were not kept; a marker in the log says so."""
        with self.changed:
            self.dropped += size

    def add(self, event: str, data: str) -> None:
        """Queue a progress event (dropped, with a marker in the log, when the backlog is full)."""
        if not data:
            return
        with self.changed:
            if self.full():
                self.dropped += len(data.encode())
                return
            self._mark_dropped()
            last_event, pieces = self.queued[-1] if self.queued else ("", [])
            if last_event == event == "log_chunk":
                pieces.append(data)
            elif last_event == event == "percent":  # only the latest percentage matters
                self.held -= len(pieces[0])
                pieces[:] = [data]
            else:
                self.queued.append((event, [data]))
            self.held += len(data)
            if self.queued_since is None:
                self.queued_since = time.monotonic()
                self.changed.notify_all()

    def _mark_dropped(self) -> None:
        if self.dropped:
            marker, self.dropped = f"[… {self.dropped} bytes dropped]", 0
            self.queued.append(("log_chunk", [marker]))
            self.held += len(marker)
            self.queued_since = self.queued_since or time.monotonic()

    def request_stop(self, reason: str, grace: float) -> None:
        """Stop the work: the first reason stays, and the deadline for force is fixed then (or moved earlier)."""
        with self.changed:
            if self.stop_reason is None:
                self.stop_reason = reason
            kill_at = time.monotonic() + grace
            self.kill_at = kill_at if self.kill_at is None else min(self.kill_at, kill_at)
            self.changed.notify_all()

    def check_limits(self) -> None:
        """Stop the work past its wall-clock limit, or past the shutdown deadline."""
        if self.stop_reason is not None:
            return
        now, deadline = time.monotonic(), self.engine.deadline
        if now - self.started > self.limit:
            self.request_stop("timeout", self.engine.grace)
        elif deadline is not None and now >= deadline:
            self.request_stop("shutdown", _KILL_DELAY)

    def close(self) -> None:
        """The work ended: send what is left, then the keeper ends."""
        with self.changed:
            self._mark_dropped()
            self.closed = True
            self.changed.notify_all()
        self.keeper.join()

    # -- the keeper thread

    def _keep(self) -> None:
        """Send progress and heartbeats until the work ended and all is sent, or the server refuses."""
        engine = self.engine
        backoff = _Backoff(f"job {self.job['id']}: progress not sent", engine.abandon)
        last_contact = time.monotonic()
        while True:
            with self.changed:
                while True:
                    self.check_limits()
                    now = time.monotonic()
                    if (self.closed and not self.queued and not self.in_flight) or engine.abandon.is_set():
                        return
                    if self.kill_at is not None and now > self.kill_at + _KILL_DELAY and not self.closed:
                        # Only a function that ignores its stop gets here: a command is killed by now.
                        _log.warning(
                            "job %s: still running after its stop; its lease is left to expire", self.job["id"]
                        )
                        return
                    due = last_contact + self.heartbeat
                    if self.in_flight:
                        due = now  # a failed send: the back-off has waited already
                    elif self.queued_since is not None:
                        hurry = self.closed or self.held >= engine.batch_bytes
                        due = min(due, now if hurry else self.queued_since + _BATCH_DELAY)
                    if due <= now:
                        break
                    self.changed.wait(min(due - now, _BATCH_DELAY))
                if not self.in_flight:
                    self._take_batch()
                batch = list(self.in_flight)
            body = "".join(_progress_event(item.id, item.event, item.data) for item in batch).encode()
            try:
                engine.client.request(
                    "PUT", f"{self.path}/progress", body, {"Content-Type": "text/event-stream"}, _PROGRESS_TIMEOUT
                )
            except LazybossError as error:
                if error.status == 413:
                    self._shrink(batch, len(body))
                elif not _transient(error):
                    self._lose(error)
                    return
                else:
                    with self.changed:
                        self.failing = True
                        self.changed.notify_all()
                    if not backoff.wait(error):
                        return  # the worker is giving up on the server
                continue
            backoff.reset()
            last_contact = time.monotonic()
            with self.changed:
                self.in_flight, self.failing = [], False
                self.held -= sum(len(item.data) for item in batch)
                self.changed.notify_all()

    def _take_batch(self) -> None:
        """Move queued events into a batch whose encoding fits `batch_bytes`, giving them ids."""
        room = self.engine.batch_bytes
        while self.queued and room > 0:
            event, pieces = self.queued[0]
            data = "".join(pieces)
            size = _progress_size(self.next_id, event, data)
            if size > room and event == "log_chunk":
                cut = self._fitting(data, room)
                if cut == 0 and self.in_flight:
                    pieces[:] = [data]
                    break
                pieces[:] = [data[max(cut, 1) :]]
                data = data[: max(cut, 1)]
                size = room
            elif size > room and self.in_flight:
                break
            else:
                self.queued.pop(0)
            self.in_flight.append(ProgressItem(self.next_id, event, data))
            self.next_id += 1
            room -= size
        if not self.queued:
            self.queued_since = None

    def _fitting(self, text: str, room: int) -> int:
        """How many characters of `text` fit in a log event of `room` bytes."""
        count = min(len(text), room)
        while count > 0:
            size = _progress_size(self.next_id, "log_chunk", text[:count])
            if size <= room:
                return count
            count = min(count - 1, count * room // size)
        return 0

    def _shrink(self, batch: list[ProgressItem], size: int) -> None:
        """A 413: the server stored nothing. Send smaller batches from now on, or drop the smallest."""
        with self.changed:
            engine = self.engine
            self.in_flight = []
            if engine.batch_bytes > _SMALLEST_BATCH:
                engine.batch_bytes = max(_SMALLEST_BATCH, min(engine.batch_bytes, size) // 2)
                _log.warning(
                    "job %s: the server refused %d bytes of progress (413); sending at most %d bytes a request",
                    self.job["id"],
                    size,
                    engine.batch_bytes,
                )
                self.queued[:0] = [(item.event, [item.data]) for item in batch]
                self.next_id = batch[0].id  # those ids were never stored
                self.queued_since = self.queued_since or time.monotonic()
            else:
                self.held -= sum(len(item.data) for item in batch)
                self.dropped += sum(len(item.data.encode()) for item in batch)
                _log.warning("job %s: the server refused %d bytes of progress (413); dropped", self.job["id"], size)

    def _lose(self, error: LazybossError) -> None:
        """The server takes no more reports on this attempt (cancelled, expired, …): stop the work."""
        self.gone = error.code or str(error.status)
        _log.warning("job %s: %s; stopping its work", self.job["id"], error)
        self.request_stop(self.gone if self.gone in ("cancelled", "expired") else "refused", _KILL_DELAY)


class _Engine:
    """The worker: claims jobs for its free slots, runs each through a runner, keeps the leases, reports.

    A runner does one job: `run(attempt)` returns the `_Outcome` to report (or
    None to report nothing), queues progress with `attempt.add`, and stops the
    work when `attempt.stop_reason` is set, by force at `attempt.kill_at`.
    `lazyboss work -- COMMAND` runs a `_CommandRunner`, `Worker` a
    `_FunctionRunner`. The first SIGTERM or SIGINT stops claiming and gives
    running jobs `grace` seconds; a second one stops them at once.
    """

    LONG_POLL = 30.0

    def __init__(
        self,
        client: Client,
        types: list[str],
        runner: Any,
        concurrency: int = 1,
        grace: float = 30.0,
        timeout: float | None = None,
        labels: dict[str, str] | None = None,
    ):
        self.client = client
        self.types = types
        self.labels = labels or {}  # what jobs' claims are matched with
        self.runner = runner
        self.concurrency = concurrency
        self.grace = grace
        self.timeout = timeout
        self.batch_bytes = _BATCH_BYTES  # learnt from 413s, for every attempt
        self.stopping = threading.Event()
        self.abandon = threading.Event()  # give up on the server: what is not delivered yet is dropped
        self.deadline: float | None = None  # after a signal: when running jobs get stopped
        self.give_up_at: float | None = None
        self.exit_status = _EXIT_OK
        self.attempts: set[_Attempt] = set()
        self.idle = concurrency
        self.slots_changed = threading.Condition()
        import queue

        self.claimed: queue.SimpleQueue = queue.SimpleQueue()
        self.poll: http.client.HTTPConnection | None = None
        self.reports: list[_PendingReport] = []  # waiting for the request on its way to end
        self.reporting = False  # a slot is sending reports
        self.reports_changed = threading.Condition()

    def run(self) -> int:
        """Work until SIGTERM or SIGINT; return the exit status (0, or 130 after SIGINT)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():  # elsewhere, `shut_down` is called by hand
            previous = {signum: signal.signal(signum, self.shut_down) for signum in (signal.SIGTERM, signal.SIGINT)}
        self.runner.start()
        threads = [threading.Thread(target=self.claim_loop, name="claims", daemon=True)]
        threads += [threading.Thread(target=self.slot, name=f"slot-{n}", daemon=True) for n in range(self.concurrency)]
        _log.info("working on %s with %d slot(s): %s", ", ".join(self.types), self.concurrency, self.runner.describe())
        for thread in threads:
            thread.start()
        try:
            abandoned_at = None
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.1)
                now = time.monotonic()
                if self.give_up_at is not None and now > self.give_up_at:
                    self.abandon.set()
                abandoned_at = abandoned_at or (now if self.abandon.is_set() else None)
                if abandoned_at is not None and now - abandoned_at > _ABANDON_WAIT:
                    # A call still waiting for the server may not hold the exit up; the watchdog
                    # kills what is left of the commands.
                    _log.warning("exiting: what is not delivered yet is dropped")
                    break
        finally:
            self.runner.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        _log.info("worker stopped")
        return self.exit_status

    def shut_down(self, signum: int, frame: Any) -> None:
        """First signal: claim nothing more, give running jobs `grace` s. A second: stop them now."""
        if self.stopping.is_set():
            _log.warning("stopping running jobs now")
            self.abandon.set()
            for attempt in list(self.attempts):
                attempt.request_stop("shutdown", 0)
            return
        _log.info("stopping: no more claims; running jobs get %g s to finish", self.grace)
        self.exit_status = _EXIT_INTERRUPTED if signum == signal.SIGINT else _EXIT_OK
        self.deadline = time.monotonic() + self.grace
        self.give_up_at = self.deadline + _KILL_DELAY + _REPORT_GRACE
        self.stopping.set()
        poll = self.poll
        if poll is not None and poll.sock is not None:  # cut the waiting long poll
            try:
                poll.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.slots_changed:
            self.slots_changed.notify_all()

    def claim_loop(self) -> None:
        """Claim jobs whenever a slot is free, until stopped; then tell the slots to end."""
        backoff = _Backoff("cannot claim", self.stopping)
        while not self.stopping.is_set():
            with self.slots_changed:
                if self.idle == 0 and self.poll is not None:
                    self.poll.close()  # it would sit idle until a slot frees up
                    self.poll = None
                self.slots_changed.wait_for(lambda: self.idle > 0 or self.stopping.is_set())
                free = self.idle
            if self.stopping.is_set():
                break
            asked = time.monotonic()
            try:
                jobs = self.claim(free)
            except LazybossError as error:
                if self.stopping.is_set() or not backoff.wait(error):
                    break
                continue
            backoff.reset()
            if not jobs:
                # Answered empty before its wait was over: the server is stopping, or its --max-wait
                # is short (0 too). Not a loop as fast as the server answers, then.
                self.stopping.wait(asked + _EMPTY_CLAIM_PACE - time.monotonic())
            with self.slots_changed:
                self.idle -= len(jobs)
            for job in jobs:
                self.claimed.put(job)
        for _ in range(self.concurrency):
            self.claimed.put(None)

    def claim(self, limit: int) -> list[dict]:
        """One long poll for up to `limit` jobs, the free slots: one request however many are free."""
        within = self.LONG_POLL + 30
        if self.poll is None or self.poll.sock is None:
            self.poll = self.client._connect(within)
        connection = self.poll
        body = _encode({"types": self.types, "wait": self.LONG_POLL, "labels": self.labels, "max": limit}).encode()
        headers = {**self.client._headers, "Content-Type": "application/json"}
        try:
            if self.stopping.is_set():
                return []
            status, answer = self.client._exchange(connection, "POST", "/jobs/attempt", body, headers, within)
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            self.poll = None
            if self.stopping.is_set():
                return []
            raise Unreachable(f"lost the connection to {self.client.url}: {error}") from None
        if status == 204:
            return []
        if status != 201 or not isinstance(answer, dict) or not isinstance(answer.get("jobs"), list):
            raise self.client._not_lazyboss("POST", "/jobs/attempt", status, "something other than the jobs claimed")
        return answer["jobs"]

    def slot(self) -> None:
        """One slot: run the jobs the claim loop hands over, until it says to end."""
        while True:
            job = self.claimed.get()
            if job is None:
                return
            try:
                self.run_attempt(job)
            except Exception:  # a bug in one job must not take the slot down
                _log.exception("job %s: the worker failed", job.get("id"))
            finally:
                with self.slots_changed:
                    self.idle += 1
                    self.slots_changed.notify_all()

    def run_attempt(self, job: dict) -> None:
        """Run one job: keep its lease while the runner works, send its progress, report its outcome."""
        _log.info("claimed job %s (type %s, attempt %s)", job["id"], job["type"], job["attempt"])
        attempt = _Attempt(self, job)
        self.attempts.add(attempt)
        attempt.keeper.start()
        try:
            if self.abandon.is_set():  # a second signal came while the job was handed over
                attempt.request_stop("shutdown", 0)
            outcome = self.runner.run(attempt)
        finally:
            attempt.close()
            self.attempts.discard(attempt)
        if outcome is not None and attempt.gone is None:
            self.report(attempt, outcome)

    def report(self, attempt: _Attempt, outcome: _Outcome) -> None:
        """Deliver a result or error, and return once it is delivered (or dropped, or given up at exit).

        Reports of jobs that end close together go in one request: the slot
        that finds no request on its way sends every report waiting, its own
        and those that came while the last request was out; the others wait
        for the request that carries theirs. A lone report goes at once.
        """
        pending = _PendingReport(attempt, outcome)
        with self.reports_changed:
            self.reports.append(pending)
            while not pending.settled:
                if not self.reporting:
                    self.reporting, batch, self.reports = True, self.reports, []
                    break
                self.reports_changed.wait()
            else:
                return
        try:
            self.send_reports(batch)
        finally:
            with self.reports_changed:
                self.reporting = False
                for sent in batch:
                    sent.settled = True
                self.reports_changed.notify_all()

    def send_reports(self, batch: list[_PendingReport]) -> None:
        """Send reports in one request (`POST /jobs/reports`), again after a back-off while the server is
        away; each alone (`PUT`, smaller after a 413) when there is one, or the batch was too large."""
        if len(batch) == 1:
            self.send_report(batch[0].attempt, batch[0].outcome)
            return
        body = [
            {
                "job": sent.attempt.job["id"],
                "attempt": sent.attempt.job["attempt"],
                sent.outcome.kind: sent.outcome.body,
            }
            for sent in batch
        ]
        backoff = _Backoff(f"{len(batch)} reports not delivered", self.abandon)
        while True:
            try:
                answers = self.client._json("POST", "/jobs/reports", body, members=("reports",))["reports"]
                break
            except LazybossError as error:
                if error.status == 413:
                    for sent in batch:
                        self.send_report(sent.attempt, sent.outcome)
                    return
                if _transient(error) and backoff.wait(error):
                    continue
                for sent in batch:
                    job_id, kind = sent.attempt.job["id"], sent.outcome.kind
                    _log.error(
                        "job %s: %s not delivered (%s); the job is handed out again after its lease",
                        job_id,
                        kind,
                        error,
                    )
                return
        for sent, answer in zip(batch, answers):
            if answer["status"] == 422 and answer["error"] == "invalid_result":
                _log.warning("job %s: result refused, sent as its error: %s", sent.attempt.job["id"], answer["detail"])
                self.send_report(sent.attempt, sent.outcome.refused(answer["detail"]))
            elif answer["status"] != 201:
                _log.warning(
                    "job %s: %s dropped: %s %s",
                    sent.attempt.job["id"],
                    sent.outcome.kind,
                    answer["error"],
                    answer["detail"],
                )

    def send_report(self, attempt: _Attempt, outcome: _Outcome) -> None:
        """Deliver one result or error: again after a back-off while the server is away, smaller after a 413."""
        job_id = attempt.job["id"]
        backoff = _Backoff(f"job {job_id}: {outcome.kind} not delivered", self.abandon)
        while True:
            try:
                self.client.request("PUT", f"{attempt.path}/{outcome.kind}", outcome.body)
                return
            except LazybossError as error:
                if error.code == "invalid_result" and outcome.kind == "result":
                    _log.warning("job %s: result refused, sent as its error: %s", job_id, error.detail)
                    outcome = outcome.refused(error.detail)
                    continue
                if error.status == 413:
                    smaller = outcome.smaller()
                    if smaller is not None:
                        _log.warning("job %s: %s too large for the server (413); sending less", job_id, outcome.kind)
                        outcome = smaller
                        continue
                if not _transient(error):
                    _log.warning("job %s: %s dropped: %s", job_id, outcome.kind, error)
                    return
                if not backoff.wait(error):
                    _log.error(
                        "job %s: %s lost at exit; the job is handed out again after its lease", job_id, outcome.kind
                    )
                    return


@dataclass
class _PendingReport:
    """A result or error a slot waits to see delivered."""

    attempt: _Attempt
    outcome: _Outcome
    settled: bool = False  # delivered, dropped, or given up


# -- running a command per job

_OUTPUT_TAIL = 64 * 1024  # bytes of stdout and stderr kept for the report
_LEFTOVER_WAIT = 2.0  # output still open this long after the command exited belongs to something it left behind
_PERCENT_LINE = re.compile(r"^LAZYBOSS_PERCENT=(\d+(?:\.\d+)?)\s*$")
_CREDENTIAL_VARIABLES = ("LAZYBOSS_TOKEN", "LAZYBOSS_USER", "LAZYBOSS_TOKEN_FILE")

# Kills the process groups of running commands when the worker dies, even by SIGKILL. It reads
# "+ GROUP" and "- GROUP" lines from the worker and, at the end of its input (the worker is gone),
# kills the groups still running. Plain sh: a few hundred kilobytes, started once per worker.
_WATCHDOG = """
trap '' INT TERM HUP
groups=' '
while read -r change group; do
    case $change in
        +) groups="$groups$group " ;;
        -) groups="${groups%% $group *} ${groups#* $group }" ;;
    esac
done
for group in $groups; do kill -s KILL -- -"$group" 2>/dev/null; done
"""


def _signal_group(group: int, signum: int) -> None:
    """Signal every process of a process group, if any is left."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


class _Output:
    """One output stream of a command: its decoder for the log, its last bytes, its unfinished line."""

    def __init__(self, name: str):
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.tail = bytearray()
        self.line = ""  # the unfinished last line, to spot LAZYBOSS_PERCENT=

    def take(self, data: bytes, attempt: _Attempt) -> None:
        """Keep the tail and queue the text as a log chunk (or drop it when the backlog is full)."""
        self.tail += data
        del self.tail[:-_OUTPUT_TAIL]
        if attempt.full():
            attempt.drop(len(data))
            self.decoder.reset()
            return
        text = self.decoder.decode(data, final=not data)
        attempt.add("log_chunk", text)
        if self.name == "stderr":
            lines = _lines(self.line + text)
            self.line = lines[-1][0][-100:]  # longer lines are not percentages anyway
            for line, _ in lines[:-1]:
                match = _PERCENT_LINE.match(line.strip())
                if match:
                    attempt.add("percent", match.group(1))

    def text(self, limit: int) -> str:
        """The last `limit` bytes as text, from a character's start."""
        data = bytes(self.tail[len(self.tail) - limit :]) if limit else b""
        start = 0
        while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
            start += 1
        return data[start:].decode("utf-8", "replace")


class _CommandRunner:
    """Runs a command per job in its own process group: parameters on stdin, output as log progress.

    The report is `{return_code, signal, stdout, stderr, duration_s}` (and
    `stopped_because` when the worker stopped it): a result for exit 0, else
    an error. The worker's credentials are kept out of the command's
    environment, and a watchdog kills the command's group if the worker dies.
    """

    lease_is_limit = True  # a command may run for its job's timeout, unless --timeout says otherwise

    def __init__(self, command: list[str], json_result: bool = False, secrets: tuple[str, ...] = ()):
        self.command = command
        self.json_result = json_result
        self.environment = {
            name: value
            for name, value in os.environ.items()
            if name not in _CREDENTIAL_VARIABLES and not any(secret in value for secret in secrets if secret)
        }
        self.watchdog: subprocess.Popen | None = None
        self.watchdog_lock = threading.Lock()

    def describe(self) -> str:
        """The command, for the log."""
        import shlex

        return shlex.join(self.command)

    def start(self) -> None:
        """Start the watchdog: in its own session, so a Ctrl-C in the terminal does not reach it."""
        import subprocess

        self.watchdog = subprocess.Popen(
            ["sh", "-c", _WATCHDOG], stdin=subprocess.PIPE, start_new_session=True, env={"PATH": os.defpath}
        )

    def close(self) -> None:
        """End the watchdog (it kills what is still running)."""
        if self.watchdog is not None:
            self.watchdog.stdin.close()
            self.watchdog.wait()

    def watch(self, change: str, group: int) -> None:
        """Tell the watchdog a group started (+) or ended (-)."""
        if self.watchdog is None:
            return
        with self.watchdog_lock:
            try:
                self.watchdog.stdin.write(f"{change} {group}\n".encode())
                self.watchdog.stdin.flush()
            except OSError as error:
                _log.warning("the watchdog is gone (%s): a command may outlive a killed worker", error)

    def run(self, attempt: _Attempt) -> _Outcome | None:
        """Run the command for one job and tell what to report."""
        job = attempt.job
        environment = {
            **self.environment,
            "LAZYBOSS_JOB_ID": job["id"],
            "LAZYBOSS_ATTEMPT": job["attempt"],
            "LAZYBOSS_TYPE": job["type"],
            "LAZYBOSS_URL": attempt.engine.client.url,
        }
        import subprocess

        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                start_new_session=True,  # its own process group: we can stop all it starts
            )
        except OSError as error:
            why = f"cannot run {self.command[0]}: {error.strerror or error}"
            _log.warning("finished job %s: %s", job["id"], why)
            outcome = {"error": why, "stopped_because": "cannot_start", "return_code": None, "signal": None}
            return _Outcome("error", {**outcome, "stdout": "", "stderr": "", "duration_s": 0.0})
        self.watch("+", process.pid)
        try:
            outputs = self.supervise(process, attempt)
        finally:
            _signal_group(process.pid, signal.SIGKILL)  # whatever it left running
            process.wait()
            self.watch("-", process.pid)
        return self.outcome(process.returncode, outputs, attempt)

    def supervise(self, process: subprocess.Popen, attempt: _Attempt) -> list[_Output]:
        """Feed stdin, read the output, stop the command when asked, until it ended and its output closed."""
        import subprocess

        assert process.stdin and process.stdout and process.stderr
        selector = selectors.DefaultSelector()
        outputs = {process.stdout.fileno(): _Output("stdout"), process.stderr.fileno(): _Output("stderr")}
        for descriptor in outputs:
            os.set_blocking(descriptor, False)
            selector.register(descriptor, selectors.EVENT_READ)
        parameters = memoryview(_encode(attempt.job.get("parameters")).encode() + b"\n")
        stdin = process.stdin.fileno()
        os.set_blocking(stdin, False)
        selector.register(stdin, selectors.EVENT_WRITE)
        signalled, exited_at = None, None
        try:
            while True:
                attempt.check_limits()
                now = time.monotonic()
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                reading = any(descriptor in outputs for descriptor in selector.get_map())
                # While the server takes the output in, a full backlog holds it back: the command waits on its pipe.
                holding = attempt.holding()
                if exited_at is not None and (not reading or (now - exited_at > _LEFTOVER_WAIT and not holding)):
                    break
                if attempt.stop_reason is not None and signalled is None and now < attempt.kill_at:
                    signalled = signal.SIGTERM
                    _signal_group(process.pid, signal.SIGTERM)
                if attempt.kill_at is not None and now >= attempt.kill_at and signalled != signal.SIGKILL:
                    signalled = signal.SIGKILL
                    _signal_group(process.pid, signal.SIGKILL)
                wait = _BATCH_DELAY
                if attempt.kill_at is not None and signalled != signal.SIGKILL:
                    wait = max(0.0, min(wait, attempt.kill_at - now))
                if holding:
                    attempt.wait_for_room(wait)
                    continue
                if not selector.get_map():
                    with suppress(subprocess.TimeoutExpired):
                        process.wait(wait)
                    continue
                for key, _ in selector.select(wait):
                    if key.fd == stdin:
                        try:
                            parameters = parameters[os.write(key.fd, parameters[:65536]) :]
                        except OSError:  # the command does not read its stdin: fine
                            parameters = parameters[:0]
                        if not parameters:
                            selector.unregister(key.fd)
                            process.stdin.close()
                        continue
                    data = os.read(key.fd, 65536)
                    outputs[key.fd].take(data, attempt)
                    if not data:
                        selector.unregister(key.fd)
        finally:
            selector.close()
            for pipe in (process.stdin, process.stdout, process.stderr):
                pipe.close()
        return list(outputs.values())

    def outcome(self, code: int, outputs: list[_Output], attempt: _Attempt) -> _Outcome | None:
        """Log how the command ended; the result or error to report (None once the attempt is gone)."""
        duration = time.monotonic() - attempt.started
        signame = signal.Signals(-code).name if code < 0 else None
        reason = attempt.stop_reason
        _log.info(
            "finished job %s: %s in %.2f s%s",
            attempt.job["id"],
            f"killed by {signame}" if signame else f"exit {code}",
            duration,
            f" ({reason})" if reason else "",
        )
        if attempt.gone is not None:
            return None
        stdout, stderr = outputs

        def report(tail: int, **extra: Any) -> dict:
            body = {"return_code": None if signame else code, "signal": signame}
            body.update(stdout=stdout.text(tail), stderr=stderr.text(tail), duration_s=round(duration, 3))
            return {**body, **({"stopped_because": reason} if reason else {}), **extra}

        if code == 0 and self.json_result:
            try:
                result = json.loads(stdout.text(_OUTPUT_TAIL))
            except ValueError as error:
                not_json = f"--json-result: stdout is not JSON: {error}"
                return _shrinking("error", lambda tail: report(tail, error=not_json))
            too_large = "--json-result: the result is too large for the server"
            return _Outcome("result", result, lambda: _shrinking("error", lambda tail: report(tail, error=too_large)))
        return _shrinking("result" if code == 0 else "error", report)


def _shrinking(kind: str, report: Callable[[int], Any], tail: int = _OUTPUT_TAIL) -> _Outcome:
    """An outcome whose output tails halve each time the server finds it too large, down to none."""
    if tail == 0:
        return _Outcome(kind, report(0))
    return _Outcome(kind, report(tail), lambda: _shrinking(kind, report, tail // 2 if tail > 256 else 0))


# -- running a Python function per job


class Job:
    """What a task function gets besides its parameters: the job, and how to report on it.

    `progress`, `log` and `event` queue progress events that the worker sends
    in batches, each with an id (resent without duplicates), as the shell
    worker does. Once the server has cancelled the job (or its lease expired,
    or the worker stops it) `cancelled` is true, and the next of those calls
    raises `Cancelled`.
    """

    def __init__(self, attempt: _Attempt):
        self._attempt = attempt
        self.data: dict = attempt.job
        self.id: str = attempt.job["id"]
        self.type: str = attempt.job["type"]
        self.attempt: str = attempt.job["attempt"]
        self.parameters: Any = attempt.job.get("parameters")

    @property
    def cancelled(self) -> bool:
        """Whether the work should stop: cancelled, expired, past its time limit, or the worker stopping."""
        return self._attempt.stop_reason is not None

    def progress(self, percent: float) -> None:
        """Report how far the work is, from 0 to 100: the job's `progress`."""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise ValueError(f"progress takes a number from 0 to 100, not {percent!r}")
        self._send("percent", repr(float(percent)))

    def log(self, text: str) -> None:
        """Add text to the attempt's log (`GET /jobs/{id}/attempts/{aid}/log`), as it is: end lines yourself."""
        self._send("log_chunk", str(text))

    def event(self, name: str, data: Any = "") -> None:
        """Report anything else by name: `data` is sent as it is if it is text, else as JSON."""
        if not _PROGRESS_EVENT.fullmatch(name):
            raise ValueError(f"an event name is 1-64 letters, digits and _.:-, not {name!r}")
        self._send(name, data if isinstance(data, str) else _encode(data))

    def _send(self, event: str, data: str) -> None:
        attempt = self._attempt
        while attempt.holding():  # the server is taking in a full backlog: wait, as a command waits on its pipe
            attempt.wait_for_room(_BATCH_DELAY)
        if attempt.stop_reason is not None:
            raise Cancelled(f"job {self.id}: {attempt.stop_reason}")
        attempt.add(event, data)


class _FunctionRunner:
    """Runs the Python function registered for a job's type, on the slot's thread.

    Its return value (any JSON) is the result; an exception is the error
    (`{error, message, traceback}`), and the server's retry policy decides.
    `Cancelled` out of a cancelled or expired attempt reports nothing.
    """

    lease_is_limit = False  # heartbeats keep the lease however long a function runs

    def __init__(self, tasks: dict[str, Callable[[Any, Job], Any]]):
        self.tasks = tasks

    def describe(self) -> str:
        """The functions, for the log."""
        return ", ".join(f"{name}={task.__module__}.{task.__qualname__}" for name, task in self.tasks.items())

    def start(self) -> None:
        """Nothing to prepare."""

    def close(self) -> None:
        """Nothing to clean up."""

    def run(self, attempt: _Attempt) -> _Outcome | None:
        """Call the job's function and tell what to report."""
        job, outcome = Job(attempt), None
        try:
            result = self.tasks[job.type](job.parameters, job)
            outcome = _Outcome("result", result, lambda: _Outcome("error", _result_too_large(result)))
            how = "returned"
        except Cancelled:
            how = "stopped"
            if attempt.stop_reason in ("timeout", "shutdown"):
                outcome = _Outcome("error", {"error": "stopped", "stopped_because": attempt.stop_reason})
        except BaseException as error:  # the function's failure is the job's error, even SystemExit's
            how = f"raised {type(error).__name__}"
            trace = traceback.format_exc()
            body = {"error": type(error).__name__, "message": str(error), "traceback": trace}
            outcome = _Outcome("error", body, lambda: _Outcome("error", {**body, "traceback": trace[-4096:]}))
        reason = attempt.stop_reason
        duration = time.monotonic() - attempt.started
        _log.info("finished job %s: %s in %.2f s%s", job.id, how, duration, f" ({reason})" if reason else "")
        if outcome is not None and outcome.kind == "result":
            try:
                _encode(outcome.body)
            except (TypeError, ValueError) as error:
                outcome = _Outcome("error", {"error": "TypeError", "message": f"the result is not JSON: {error}"})
        return outcome


def _result_too_large(result: Any) -> dict:
    """The error reported instead of a result the server refused as too large."""
    return {"error": "too_large", "message": f"the result ({len(_encode(result))} bytes) is too large for the server"}


class Worker:
    """Python functions as workers: `@worker.task("resize")` on `def resize(params, job): ...`.

    `run()` claims jobs of the registered types for `concurrency` slots and
    calls each function on a thread of its own, on the same engine as
    `lazyboss work`: heartbeats, batched progress, back-off, and on SIGTERM
    or SIGINT no more claims, `grace` seconds for running functions, exit.
    `timeout` (seconds) sets a wall-clock limit per job after which
    `job.cancelled` is true; without it a function runs as long as it takes.
    `labels` (key: value) also win it the jobs whose claims they match.
    `lazyboss work --python module:worker` runs one from the command line.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        concurrency: int = 1,
        grace: float = 30.0,
        timeout: float | None = None,
        labels: dict[str, str] | None = None,
    ):
        self.client = client
        self.concurrency = concurrency
        self.grace = grace
        self.timeout = timeout
        self.labels = labels or {}
        self.tasks: dict[str, Callable[[Any, Job], Any]] = {}
        self._engine: _Engine | None = None

    def task(self, job_type: str) -> Callable[[Callable[[Any, Job], Any]], Callable[[Any, Job], Any]]:
        """A decorator: the function does the jobs of this type."""
        if not _TYPE_NAME.match(job_type):
            raise ValueError(f"{job_type!r} is not a job type name")

        def register(function: Callable[[Any, Job], Any]) -> Callable[[Any, Job], Any]:
            self.tasks[job_type] = function
            return function

        return register

    def run(self, concurrency: int | None = None, *, types: list[str] | None = None) -> int:
        """Work until SIGTERM or SIGINT (or `stop()`); return the exit status: 0, or 130 after SIGINT."""
        if not self.tasks:
            raise ValueError("no task: register a function with @worker.task('type') first")
        unknown = sorted(set(types or []) - set(self.tasks))
        if unknown:
            raise ValueError(f"no task for {', '.join(unknown)}; this worker has {', '.join(self.tasks)}")
        runner = _FunctionRunner({name: self.tasks[name] for name in types or self.tasks})
        engine = _Engine(
            self.client or Client(),
            list(runner.tasks),
            runner,
            concurrency or self.concurrency,
            self.grace,
            self.timeout,
            self.labels,
        )
        self._engine = engine
        return engine.run()

    def stop(self) -> None:
        """Stop as SIGTERM does: no more claims; running functions get `grace` seconds."""
        if self._engine is not None:
            self._engine.shut_down(signal.SIGTERM, None)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, refusing on one line: what is wrong, and where to read more."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(_EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_ArgumentParser):
    """A sub-command's parser: its refusals come after its own usage line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        super().error(message)


def _setting_type(name: str, env: str) -> Callable[[str], Any]:
    """argparse's `type` for a server setting: its value, or a refusal naming the flag's variable too."""

    def parse(text: str) -> Any:
        try:
            return _parse_setting(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{error} (given as the flag or {env})") from None

    return parse


# Settings whose default another setting may replace, and how their help says so.
_STOOD_IN_FOR = {
    "db": f"DATABASE_URL, else {Config.db}",
    "host": f"{Config.host}; with --unix-socket, none",
    "port": f"{Config.port}; with --unix-socket, none",
}


def _config_from(args: argparse.Namespace) -> Config:
    """The server's settings from the command line. The database is --db, else LAZYBOSS_DB, else the
    file DATABASE_URL names, else the default; ValueError for a DATABASE_URL lazyboss cannot use, or
    a database server's URL given as --db.
    With --unix-socket, TCP is served only when --host or --port is given too."""
    values = {item.name: getattr(args, item.name) for item in fields(Config)}
    if values["db"] is None:
        url = os.environ.get("DATABASE_URL", "").strip()
        values["db"] = _database_path(url) if url else Config.db
    else:
        _refuse_server_url(values["db"], "--db (or LAZYBOSS_DB)")
    tcp = not values["unix_socket"] or values["host"] is not None or values["port"] is not None
    values["host"] = Config.host if values["host"] is None else values["host"]
    values["port"] = (Config.port if values["port"] is None else values["port"]) if tcp else None
    return Config(**values)


def _build_parser() -> argparse.ArgumentParser:
    """The command line: server flags (each with a LAZYBOSS_* variable) and commands."""
    parser = _ArgumentParser(
        prog="lazyboss",
        description="A job server for small hosts. Without a command it serves.",
        epilog="Every flag can also be set as an environment variable, e.g. LAZYBOSS_PORT=9000.",
    )
    defaults = Config()
    helps = {
        "db": "the SQLite database file (created if missing), or postgresql://USER@HOST/NAME; without it, "
        "DATABASE_URL (sqlite:///PATH or postgresql://…) is read",
        "host": "address to listen on; only loopback until a token exists",
        "port": "TCP port",
        "unix_socket": "also (or, without --host and --port, only) listen on a UNIX socket at this path",
        "unix_socket_mode": "the UNIX socket's file mode: who may connect (660: its owner and group)",
        "threads": f"HTTP worker threads; streams and long polls hold one each, {_RESERVED_THREADS} stay free",
        "max_wait": "longest long poll a worker may ask for, in seconds",
        "max_body": "largest request body in bytes (larger gets 413)",
        "sync": "full: a 202 survives power loss; normal: faster, survives crashes only",
        "retain": "how long finished jobs are kept (e.g. 12h, 7d)",
        "reap_interval": "seconds between reaper rounds",
        "heartbeat": "seconds between keep-alive comments on idle event streams",
        "max_connections": "open connections; at the limit the one waiting longest for a request is closed",
        "header_timeout": "seconds a new connection, or a request once begun, has to send its headers",
        "idle_timeout": "seconds a connection may stay open without a request running",
        "umask": "file mode mask for the database files (077: readable by this user only)",
        "session_ttl": "how long a login to the status page lasts (e.g. 12h)",
        "log_level": "debug, info, warning or error",
    }
    for item in fields(Config):
        flag = "--" + item.name.replace("_", "-")
        env = "LAZYBOSS_" + item.name.upper()
        # argparse passes a text default (the variable's) through `type` too, so both are checked alike.
        # A setting that others stand in for (see _config_from) stays None unless given.
        default = os.environ.get(env, None if item.name in _STOOD_IN_FOR else getattr(defaults, item.name))
        shown = _STOOD_IN_FOR.get(item.name, "") if default is None else default if default != "" else "none"
        parser.add_argument(
            flag,
            type=_setting_type(item.name, env),
            default=default,
            help=f"{helps[item.name]} [{env}, default {shown}]",
        )
    parser.add_argument("--version", action="version", version=f"lazyboss {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    def command(name: str, text: str, remote: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[client_options] if remote else [])
        sub.set_defaults(command_parser=sub)  # so that a usage error shows this command's usage
        return sub

    client_options = argparse.ArgumentParser(add_help=False)
    client_options.add_argument(
        "--server",
        default=os.environ.get("LAZYBOSS_URL", _DEFAULT_URL),
        help=f"the lazyboss to talk to: http://HOST:PORT or unix:/PATH [LAZYBOSS_URL, default {_DEFAULT_URL}]",
    )
    client_options.add_argument(
        "--token",
        default=os.environ.get("LAZYBOSS_TOKEN"),
        help="a Bearer secret (ps shows it: prefer LAZYBOSS_TOKEN or --token-file) [LAZYBOSS_TOKEN, default none]",
    )
    client_options.add_argument(
        "--token-file",
        default=os.environ.get("LAZYBOSS_TOKEN_FILE"),
        help="read the Bearer secret from this file [LAZYBOSS_TOKEN_FILE, default none]",
    )
    client_options.add_argument(
        "--user",
        default=os.environ.get("LAZYBOSS_USER"),
        help="NAME:SECRET for HTTP Basic [LAZYBOSS_USER, default none]",
    )

    command("serve", "serve the HTTP API (the default)", remote=False)
    copy = command("copy", "copy a database into a new, empty one: SQLite to PostgreSQL, or back", remote=False)
    copy.add_argument("--from", dest="source", required=True, help="the database copied: a file or postgresql://…")
    copy.add_argument("--to", dest="target", required=True, help="an empty database: a new file or postgresql://…")
    token = command("token", "create, list or revoke credentials (on the --db file)", remote=False)
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser("create", help="make a token and print its secret, once")
    create.add_argument("--name", required=True, help="the token's name; a worker's identity")
    create.add_argument("--role", choices=ROLES, default="worker", help="what it may do (default worker)")
    token_commands.add_parser("list", help="names, roles, created and last used (never secrets)")
    revoke = token_commands.add_parser("revoke", help="delete a token; it stops working at once")
    revoke.add_argument("name", help="the token's name")

    command("types", "job types: settings and counts")
    for verb in ("pause", "resume"):
        command(verb, f"{verb} handing out jobs of a type").add_argument("type", help="the job type")
    submit = command("submit", "submit a job; print its id (with --wait: its result)")
    submit.add_argument("type", help="the job type")
    submit.add_argument(
        "parameters", nargs="?", help="the parameters as JSON, or - to read them from stdin (default {})"
    )
    submit.add_argument("--priority", type=int, help="higher runs first (default 0, or the type's)")
    submit.add_argument("--delay", type=float, help="seconds before the job may run (default 0)")
    submit.add_argument("--key", help="an Idempotency-Key: the same key never makes a second job (default none)")
    submit.add_argument("--hold", action="store_true", help="store it held: it waits for `lazyboss release ID`")
    submit.add_argument(
        "--batch",
        action="store_true",
        help="read one job's parameters per line of stdin (NDJSON) and submit them all as one batch, all or none; "
        "print their ids one per line",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job: print its result alone, its id on stderr; exit 1 if it failed",
    )
    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument(
        "--status", action="append", choices=JOB_STATUSES, help="only these statuses (repeat; default all)"
    )
    jobs.add_argument("--type", action="append", help="only these types (repeat; default all)")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    jobs.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    for verb, text in (
        ("show", "a job, its attempts and their logs"),
        ("follow", "print a job's log and status changes until it ends (exit 1 if it failed)"),
        ("cancel", "cancel a pending or processing job"),
        ("retry", "send a failed or cancelled job back to pending"),
    ):
        command(verb, text).add_argument("id", help="the job's id")
    release = command("release", "make a held job pending now")
    release.add_argument("id", help="the job's id")
    release.add_argument(
        "--wait", action="store_true", help="wait for the job: print its result alone; exit 1 if it failed"
    )
    purge = command("purge", "delete the jobs of types in statuses (never running ones), with their logs")
    purge.add_argument("--type", action="append", required=True, dest="types", help="a job type (repeat)")
    purge.add_argument(
        "--status",
        action="append",
        required=True,
        dest="statuses",
        choices=[status for status in JOB_STATUSES if status != "processing"],
        help="a status (repeat)",
    )
    purge.add_argument(
        "--older-than", help="only jobs finished (or, if not, submitted) longer ago, e.g. 7d (default: of any age)"
    )
    purge.add_argument("--yes", action="store_true", help="do not ask first")
    command("status", "queue depth by type and status, and the workers")
    apply = command("apply", "make the server's job types what FILE declares; print the difference")
    apply.add_argument("file", metavar="FILE", help='{"types": {NAME: settings}} as JSON, or TOML (.toml); - for stdin')
    apply.add_argument("--dry-run", action="store_true", help="print the difference, change nothing")
    apply.add_argument("--prune", action="store_true", help="remove types not in FILE that have no jobs")
    export = command("export", "print (or write to FILE) every configured type's settings, as apply reads them")
    export.add_argument("file", metavar="FILE", nargs="?", help="write here (.toml: TOML) instead of stdout")
    export.add_argument("--format", choices=_CONFIG_FORMATS, help="json or toml (default: by FILE's extension, json)")
    work = command("work", "run COMMAND (or Python functions) for each job of the given types")
    work.add_argument(
        "--type", action="append", dest="types", help="a job type to take (repeat; with --python default all its tasks)"
    )
    work.add_argument(
        "--python",
        metavar="MODULE:WORKER",
        help="run the lazyboss.Worker WORKER of MODULE (default: run the command after --)",
    )
    work.add_argument("-c", "--concurrency", type=int, help="jobs run at once (default 1, or the Worker's)")
    work.add_argument(
        "--timeout",
        type=float,
        help="wall-clock seconds a job may run (default: a command the job's timeout, a function no limit)",
    )
    work.add_argument(
        "--grace",
        type=float,
        help="seconds a job gets after SIGTERM of the worker, and a timed-out command between SIGTERM and SIGKILL"
        " (default 30, or the Worker's)",
    )
    work.add_argument("--json-result", action="store_true", help="the result is stdout parsed as JSON")
    work.add_argument("--name", help="the worker's name in open mode (default: the host name)")
    work.add_argument(
        "--label",
        action="append",
        default=[],
        dest="label_pairs",
        metavar="KEY=VALUE",
        help="a label of this worker (repeat): it also takes jobs whose claims reserve them for such labels"
        " (default none)",
    )
    work.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the command to run")
    return parser


def _print_json(value: Any) -> None:
    """Pretty JSON on stdout."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned table on stdout."""
    cells = [[("" if row.get(column) is None else str(row.get(column))) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[index]) for line in cells]) for index, column in enumerate(columns)]
    for line in [[column.upper() for column in columns]] + cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _command_token(args: argparse.Namespace, config: Config) -> int:
    """lazyboss token create|list|revoke, on the database file itself."""
    store = _open_store(config)
    if isinstance(store, int):
        return store
    try:
        if args.token_command == "create":
            secret = store.create_token(args.name, args.role)
            print(secret)
            print(f"Token {args.name!r} ({args.role}) created. The secret is shown only now.", file=sys.stderr)
        elif args.token_command == "list":
            _print_table(store.list_tokens(), ["name", "role", "created_at", "last_used_at"])
        else:
            store.revoke_token(args.name)
            print(f"Token {args.name!r} revoked.", file=sys.stderr)
    except LazybossError as error:
        print(f"lazyboss: {error.detail}", file=sys.stderr)
        return _EXIT_USAGE if isinstance(error, Invalid) else _EXIT_SERVER
    finally:
        store.close()
    return _EXIT_OK


def _command_copy(args: argparse.Namespace, config: Config) -> int:
    """lazyboss copy --from A --to B: every job, attempt, log, event, type, schedule and token of A into an
    empty B, in one transaction of B (A is migrated to this release first, as any start does)."""
    try:
        _refuse_server_url(args.source, "--from")
        _refuse_server_url(args.target, "--to")
        if not _is_postgres_url(args.source) and not os.path.isfile(args.source):
            raise ValueError(f"--from: there is no database file {args.source}")
    except ValueError as error:
        print(f"lazyboss: {error}", file=sys.stderr)
        return _EXIT_USAGE
    stores: list[Store] = []
    try:
        if _is_postgres_url(args.source) and not _PostgresEngine(args.source).holds_lazyboss():
            # As a missing file: opening it would make lazyboss's tables in the database copied from.
            print(f"lazyboss: --from: {_engine_for(args.source)} holds no lazyboss database", file=sys.stderr)
            return _EXIT_USAGE
        for address in (args.source, args.target):
            store = _open_store(replace(config, db=address))
            if isinstance(store, int):
                return store
            stores.append(store)
        copied = stores[0].copy_into(stores[1])
    except LazybossError as error:
        print(f"lazyboss: {error.detail}", file=sys.stderr)
        return _EXIT_USAGE if isinstance(error, Conflict) else _EXIT_SERVER
    finally:
        for store in stores:
            store.close()
    rows = ", ".join(f"{number} {table}" for table, number in copied.items())
    print(f"lazyboss: copied {stores[0].engine} into {stores[1].engine}: {rows}", file=sys.stderr)
    return _EXIT_OK


def _command_types(args: argparse.Namespace, client: Client) -> int:
    """lazyboss types | pause TYPE | resume TYPE."""
    if args.command in ("pause", "resume"):
        kind = client.put_type(args.type, paused=args.command == "pause")
        print(f"{kind['type']}: {'paused' if kind['paused'] else 'handed out'}")
        return _EXIT_OK
    rows = [
        {**kind, **kind["jobs"], "paused": "paused" if kind["paused"] else "", "backoff": kind["backoff"]["base"]}
        for kind in client.types()
    ]
    columns = ["type", "paused", "concurrency", "timeout", "max_attempts"]
    _print_table(rows, columns + ["held", "pending", "processing", "done", "failed"])
    return _EXIT_OK


class _StdinUnreadable(ValueError):
    """A command was told to read stdin (`-`) and cannot: it was closed, or is not UTF-8 text."""


def _read_stdin() -> str:
    """All of stdin as text, or `_StdinUnreadable` saying why not (a traceback would tell a script nothing)."""
    if sys.stdin is None:  # started with its stdin closed (`<&-`)
        raise _StdinUnreadable("stdin is closed: give the JSON as an argument, or pipe it in")
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as error:
        raise _StdinUnreadable(f"stdin cannot be read: {getattr(error, 'strerror', None) or error}") from None


def _command_submit(args: argparse.Namespace, client: Client) -> int:
    """lazyboss submit TYPE [JSON|-]: print the job id; with --wait, the result alone (the id on stderr).
    With --batch, the parameters of many jobs, a line each, from stdin: one request, their ids."""
    if args.batch:
        return _submit_batch(args, client)
    try:
        text = _read_stdin() if args.parameters == "-" else args.parameters
        parameters = json.loads(text) if text is not None else {}
    except _StdinUnreadable as error:
        args.command_parser.error(str(error))
    except ValueError as error:
        args.command_parser.error(f"the parameters are not JSON: {error}")
    job = client.submit(args.type, parameters, priority=args.priority, delay=args.delay, key=args.key, hold=args.hold)
    print(job["id"], file=sys.stderr if args.wait else sys.stdout)
    return _print_outcome(client, job["id"]) if args.wait else _EXIT_OK


def _submit_batch(args: argparse.Namespace, client: Client) -> int:
    """lazyboss submit TYPE --batch < NDJSON: one job per line, submitted together, all or none."""
    if args.parameters is not None:
        args.command_parser.error("--batch reads the parameters from stdin, one job per line: give no JSON argument")
    options = {"priority": args.priority, "delay": args.delay, "hold": args.hold or None}
    options = {name: value for name, value in options.items() if value is not None}
    try:
        lines = _read_stdin().splitlines()
    except _StdinUnreadable as error:
        args.command_parser.error(str(error))
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            jobs.append({"type": args.type, "parameters": json.loads(line), **options})
        except ValueError as error:
            args.command_parser.error(f"line {number} of stdin is not JSON: {error}")
    if not jobs:
        args.command_parser.error("--batch found no job on stdin (one line of JSON parameters per job)")
    submitted = client.submit_many(jobs, key=args.key)
    for job in submitted:
        print(job["id"], file=sys.stderr if args.wait else sys.stdout)
    if not args.wait:
        return _EXIT_OK
    statuses = [_print_outcome(client, job["id"]) for job in submitted]
    return max(statuses)


def _print_outcome(client: Client, job_id: str) -> int:
    """Follow a job to its end: its result alone on stdout (exit 0), or its status and error (exit 1)."""
    job = client.wait(job_id)
    _print_json(job["result"] if job["status"] == "done" else {"status": job["status"], "error": job["error"]})
    return _EXIT_OK if job["status"] == "done" else _EXIT_JOB_FAILED


def _command_jobs(args: argparse.Namespace, client: Client) -> int:
    """lazyboss jobs: newest first, as a table or JSON."""
    if args.limit < 1:
        args.command_parser.error("--limit must be at least 1")
    listing = list(itertools.islice(client.jobs(args.status, args.type, page_size=min(args.limit, 1000)), args.limit))
    if args.json:
        _print_json(listing)
    else:
        _print_table(listing, ["id", "type", "status", "attempts", "assignee", "created_at", "finished_at"])
    return _EXIT_OK


def _command_show(args: argparse.Namespace, client: Client) -> int:
    """lazyboss show ID: the job, its attempts and their logs."""
    job = client.get(args.id)
    attempts = client.attempts(args.id)
    for attempt in attempts:
        attempt["log"] = client.log(args.id, attempt["id"])
    _print_json({**job, "attempt_history": attempts})
    return _EXIT_OK


def _command_follow(args: argparse.Namespace, client: Client) -> int:
    """lazyboss follow ID: every attempt's log and the status changes, until the job has really ended.

    A finished state that a retry has since undone is shown and followed past.
    """
    job = client.get(args.id)  # a clear 404 for an unknown job
    for event in client.events("0", jobs=[job["id"]]):
        job = event["job"]
        for item in (event.get("detail") or {}).get("events", []):
            if item["event"] == "log_chunk":
                sys.stdout.write(item["data"])
                sys.stdout.flush()
        if event["event"] != "progress":
            print(f"[lazyboss] job {job['id']} {event['event']}: {job['status']}", file=sys.stderr)
        if job["status"] in FINISHED_STATUSES:
            now = client.get(job["id"])
            if (now["status"], now["updated_at"]) == (job["status"], job["updated_at"]):
                break
    return _EXIT_OK if job["status"] == "done" else _EXIT_JOB_FAILED


def _command_change(args: argparse.Namespace, client: Client) -> int:
    """lazyboss cancel ID | retry ID | release ID [--wait]."""
    job = {"cancel": client.cancel, "retry": client.retry, "release": client.release}[args.command](args.id)
    waiting = getattr(args, "wait", False)
    print(f"job {job['id']}: {job['status']}", file=sys.stderr if waiting else sys.stdout)
    return _print_outcome(client, job["id"]) if waiting else _EXIT_OK


def _command_purge(args: argparse.Namespace, client: Client) -> int:
    """lazyboss purge --type T --status S [--older-than 7d] [--yes]: asks first (a line on stdin) unless --yes."""
    if args.older_than is not None:
        try:
            parse_duration(args.older_than)
        except ValueError as error:
            args.command_parser.error(f"--older-than: {error}")
    if not args.yes:
        counts = client.stats()["jobs_by_type"]
        types = list(dict.fromkeys(part for listed in args.types for part in listed.split(",") if part))  # as served
        statuses = list(dict.fromkeys(args.statuses))
        now = sum(counts.get(job_type, {}).get(status, 0) for job_type in types for status in statuses)
        which = f"{' or '.join(statuses)} jobs of type {' or '.join(types)}"
        # The count is all the server tells by type and status: with --older-than, of every age.
        count = f"of {now:,} now, of any age" if args.older_than else f"of {now:,} now"
        older = f" older than {args.older_than}" if args.older_than else ""
        print(f"Delete the {which}{older} ({count})? [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = sys.stdin.readline() if sys.stdin is not None else ""  # None: stdin was closed
        except (OSError, ValueError):
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("lazyboss: nothing deleted", file=sys.stderr)
            return _EXIT_JOB_FAILED
    deleted = client.purge(args.types, args.statuses, args.older_than)
    print(f"deleted {deleted:,} jobs")
    return _EXIT_OK


def _command_status(args: argparse.Namespace, client: Client) -> int:
    """lazyboss status: queue depth by type and status, and the workers (for admins)."""
    stats = client.stats()
    rows = [
        {"type": job_type, **{status: counts.get(status, 0) for status in JOB_STATUSES}}
        for job_type, counts in sorted(stats["jobs_by_type"].items())
    ]
    _print_table(rows, ["type", *JOB_STATUSES])
    try:
        workers = client.workers()
    except Forbidden:
        return _EXIT_OK  # not an admin: no worker list
    print()
    for worker in workers:
        worker["doing"] = ", ".join(f"job {w['job']} since {w['since']}" for w in worker["working_on"]) or "-"
    _print_table(workers, ["name", "last_seen_at", "doing", "done", "failed", "expired"])
    return _EXIT_OK


def _command_work(args: argparse.Namespace, client: Client) -> int:
    """lazyboss work --type T -- COMMAND... | --python MODULE:WORKER: a worker."""
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.concurrency is not None and args.concurrency < 1:
        args.command_parser.error("-c needs at least 1")
    try:
        args.labels = _parse_label_filter(args.label_pairs, "--label", "=")
    except Invalid as error:
        args.command_parser.error(error.detail)
    if args.python:
        if command or args.json_result:
            args.command_parser.error("--python runs functions: give no command and no --json-result")
        return _work_in_python(args, client)
    if not args.types:
        args.command_parser.error("give the job types to take: --type T (repeat for more)")
    if not command:
        args.command_parser.error("give the command after --, e.g. lazyboss work --type t -- sh -c 'cat'")
    if shutil.which(command[0]) is None:
        print(f"lazyboss work: {command[0]}: command not found (or not executable)", file=sys.stderr)
        return _EXIT_USAGE
    secrets = (args.token or "", (args.user or "").partition(":")[2])
    runner = _CommandRunner(command, args.json_result, tuple(secret for secret in secrets if len(secret) >= 8))
    grace = 30.0 if args.grace is None else args.grace
    return _Engine(client, args.types, runner, args.concurrency or 1, grace, args.timeout, args.labels).run()


def _work_in_python(args: argparse.Namespace, client: Client) -> int:
    """lazyboss work --python MODULE:WORKER: the Worker found there, with this command line's server and options."""
    module_name, _, name = args.python.partition(":")
    sys.path.insert(0, os.getcwd())  # as `python -m` would: the module may sit in the current directory
    try:
        worker = getattr(importlib.import_module(module_name), name or "worker")
    except (ImportError, AttributeError) as error:
        args.command_parser.error(f"--python {args.python}: {error}")
    if not isinstance(worker, Worker):
        args.command_parser.error(f"--python {args.python} is a {type(worker).__name__}, not a lazyboss.Worker")
    worker.client = client
    worker.grace = worker.grace if args.grace is None else args.grace
    worker.timeout = args.timeout or worker.timeout
    worker.labels = {**worker.labels, **args.labels}
    try:
        return worker.run(args.concurrency, types=args.types)
    except ValueError as error:
        args.command_parser.error(str(error))


# -- type configuration as a file: lazyboss apply and export

_CONFIG_FORMATS = ("json", "toml")


def _config_format(path: str | None, named: str | None) -> str:
    """`json` or `toml`: as named, else by the file's extension (JSON for stdin or stdout)."""
    if named:
        return named
    return "toml" if path and path.lower().endswith(".toml") else "json"


def _members_once(members: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are each given once: in a file a repeated key is a mistake (the last would
    win unseen)."""
    found: dict[str, Any] = {}
    for key, value in members:
        if key in found:
            raise ValueError(f"the key {key!r} is given twice in one object")
        found[key] = value
    return found


def _check_json_values(document: Any, path: str) -> None:
    """ValueError naming the first value of a TOML document that JSON cannot hold: a date or time, or an
    infinite or NaN number."""
    pending = [(document, "")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, dict):
            pending += [(item, f"{where}.{key}" if where else key) for key, item in value.items()]
        elif isinstance(value, list):
            pending += [(item, f"{where}[{index}]") for index, item in enumerate(value)]
        elif isinstance(value, (date, time_of_day)):
            raise ValueError(f"{path}: {where} is a TOML date or time, which JSON cannot hold: write it as a string")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{path}: {where} is {value}, which JSON cannot hold")


def _read_type_config(path: str, kind: str) -> dict[str, dict]:
    """The types a configuration file declares, by name (`{"types": {NAME: settings}}`); ValueError says
    what is wrong with it."""
    try:
        if path == "-":
            text = _read_stdin()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    if kind == "toml":
        try:
            import tomllib
        except ImportError:
            raise ValueError("reading TOML needs Python 3.11 or newer (tomllib): write the file as JSON") from None
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not TOML: {error}") from None
        except RecursionError:
            raise ValueError(f"{path}: it nests too deeply") from None
        _check_json_values(document, path)
    else:
        try:
            document = json.loads(text, parse_constant=_refuse_json_constant, object_pairs_hook=_members_once)
        except ValueError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        except RecursionError:
            raise ValueError(f"{path}: it nests too deeply") from None
    types = document.get("types") if isinstance(document, dict) else None
    if not isinstance(types, dict) or set(document) != {"types"}:
        raise ValueError(f'{path}: the file holds one key, "types", an object of each type\'s settings')
    return types


def _declared_settings(name: str, body: Any) -> dict:
    """A type's settings as a file declares them, in the shape GET /types shows its own (`settings`);
    Invalid naming the field for what the server would refuse, but for the schemas (it checks those)."""
    if not _TYPE_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a type name (1-100 letters, digits, '_', '.', ':' or '-')")
    columns = _parse_type_settings(body, check_schemas=False)
    declared = _own_settings({column: columns.get(column) for column in _TYPE_COLUMNS})  # type: ignore[arg-type]
    if "paused" in columns:  # `"paused": false` says to resume; leaving it out, to leave it as it is
        declared["paused"] = bool(columns["paused"])
    return declared


def _setting_text(value: Any) -> str:
    """A setting's value on one line of a diff."""
    return "(default)" if value is None else _shortened(_encode(value), 120)


def _plan_type(own: dict | None, declared: dict) -> dict:
    """The PUT body that makes a type's own settings (None: not configured) the declared ones: each
    setting that differs, null for one to drop; `paused` only when the file names it."""
    if own is None:
        return dict(declared)
    change = {
        field: declared.get(field)
        for field in _TYPE_FIELDS
        if field != "paused" and own.get(field) != declared.get(field)
    }
    if "paused" in declared and own.get("paused", False) != declared["paused"]:
        change["paused"] = declared["paused"]
    return change


def _command_apply(args: argparse.Namespace, client: Client) -> int:
    """lazyboss apply FILE: make the server's type settings what the file declares; print the difference."""
    try:
        declared_bodies = _read_type_config(args.file, _config_format(args.file, None))
    except ValueError as error:
        args.command_parser.error(str(error))
    declared, mistakes = {}, []
    for name, body in sorted(declared_bodies.items()):
        try:
            declared[name] = _declared_settings(name, body)
        except Invalid as error:
            mistakes.append(f"types.{name}: {error.detail}")
    if mistakes:
        args.command_parser.error("; ".join(mistakes) + " (nothing was changed)")
    kinds = {kind["type"]: kind for kind in client.types()}
    configured = {name: kind["settings"] for name, kind in kinds.items() if kind["configured"]}
    tally, refused = Counter(), 0
    for name, settings in declared.items():
        change = _plan_type(configured.get(name), settings)
        if name in configured and not change:
            tally["unchanged"] += 1
            continue
        print(f"{'~' if name in configured else '+'} {name}")
        for field, value in change.items():
            print(f"    {field}: {_setting_text(configured.get(name, {}).get(field))} -> {_setting_text(value)}")
        tally["changed" if name in configured else "created"] += 1
        if not args.dry_run:
            try:
                client.put_type(name, **change)
            except LazybossError as error:
                print(f"! {name}: refused: {error.detail} ({error.status} {error.code})", file=sys.stderr)
                refused += 1
    for name in sorted(set(configured) - set(declared)):
        jobs = sum(kinds[name]["jobs"].values())
        if not args.prune:
            print(f"  {name}: not in the file, kept (--prune removes it)")
        elif jobs:
            print(f"  {name}: not in the file, kept: it has {jobs} jobs")
        else:
            print(f"- {name}")
            tally["removed"] += 1
            if not args.dry_run:
                try:
                    client.delete_type(name)
                except LazybossError as error:
                    print(f"! {name}: refused: {error.detail} ({error.status} {error.code})", file=sys.stderr)
                    refused += 1
    done = ", ".join(f"{tally[what]} {what}" for what in ("created", "changed", "removed", "unchanged"))
    if not tally["created"] + tally["changed"] + tally["removed"]:
        print(f"nothing to change: the server matches {args.file} ({tally['unchanged']} types)")
    elif args.dry_run:
        print(f"dry run, nothing sent: {done}")
    else:
        print(f"applied: {done}" + (f"; {refused} refused" if refused else ""))
    return _EXIT_SERVER if refused else _EXIT_OK


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key, "")


def _toml_value(value: Any, where: str) -> str:
    """A JSON value as a TOML value (a table inline); ValueError for null, which TOML has not."""
    if value is None:
        raise ValueError(f"{where} is null, which TOML cannot write: export as JSON")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML's, but for DEL, which TOML wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item, f"{where}[{index}]") for index, item in enumerate(value)) + "]"
    members = [f"{_toml_key(key)} = {_toml_value(item, f'{where}.{key}')}" for key, item in value.items()]
    return "{ " + ", ".join(members) + " }" if members else "{}"


def _toml_table(header: str, table: dict, where: str) -> list[str]:
    """A table and its sub-tables (objects within arrays stay inline) as TOML lines."""
    lines = [f"[{header}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v, f'{where}.{k}')}" for k, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", *_toml_table(f"{header}.{_toml_key(key)}", value, f"{where}.{key}")]
    return lines


def _type_config_text(types: dict[str, dict], kind: str) -> str:
    """Type settings as `lazyboss apply` reads them, in JSON or TOML; ValueError when TOML cannot hold them."""
    if kind == "json":
        return json.dumps({"types": types}, indent=2, ensure_ascii=False) + "\n"
    lines: list[str] = []
    for name, settings in types.items():
        lines += [*_toml_table(f"types.{_toml_key(name)}", settings, name), ""]
    return "\n".join(lines) or "[types]\n"


def _command_export(args: argparse.Namespace, client: Client) -> int:
    """lazyboss export [FILE]: every configured type's own settings, as `apply` reads them."""
    types = {kind["type"]: kind["settings"] for kind in client.types() if kind["configured"]}
    try:
        text = _type_config_text(types, _config_format(args.file, args.format))
    except ValueError as error:
        print(f"lazyboss export: {error}", file=sys.stderr)
        return _EXIT_USAGE
    if args.file in (None, "-"):
        sys.stdout.write(text)
        return _EXIT_OK
    # Written beside it and renamed over it: a full disk or a crash leaves the old file whole, never
    # a half one that a later `apply --prune` would read as fewer types.
    folder, name = os.path.split(os.path.abspath(args.file))
    partial = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    try:
        with open(partial, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, args.file)
    except OSError as error:
        with suppress(OSError):
            os.unlink(partial)
        print(f"lazyboss export: {args.file}: {error.strerror or error}", file=sys.stderr)
        return _EXIT_USAGE
    return _EXIT_OK


_CLIENT_COMMANDS = {
    "types": _command_types,
    "pause": _command_types,
    "resume": _command_types,
    "submit": _command_submit,
    "jobs": _command_jobs,
    "show": _command_show,
    "follow": _command_follow,
    "cancel": _command_change,
    "retry": _command_change,
    "release": _command_change,
    "status": _command_status,
    "purge": _command_purge,
    "work": _command_work,
    "apply": _command_apply,
    "export": _command_export,
}


def _read_token_file(args: argparse.Namespace) -> None:
    """Put the secret of --token-file into args.token, or stop with a usage error."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                args.token = file.readline().strip()
        except OSError as error:
            args.command_parser.error(f"--token-file: {error.strerror}: {args.token_file}")
        if not args.token:
            args.command_parser.error(f"--token-file: {args.token_file} is empty")


_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    """Control characters (and Unicode's line separators) written as escapes such as `\\n` or `\\x1b`."""
    return _CONTROL_CHARACTERS.sub(lambda match: repr(match.group())[1:-1], text)


class _LogFormatter(logging.Formatter):
    """A record is one line: control characters in it are escaped, so text from a client (a path, a
    worker's name) cannot forge a line of the log or drive the terminal. A traceback keeps its lines,
    each indented under its record and escaped too."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join("    " + _escape_controls(line) for line in super().formatException(ei).splitlines())


def _run_client_command(args: argparse.Namespace) -> int:
    """A command that talks to a server: its exit status, and one line on stderr when the server refused."""
    _read_token_file(args)
    # In open mode a worker's name is its Basic user: by default the host name.
    user = args.user or (f"{args.name or socket.gethostname()}:" if args.command == "work" else None)
    try:
        client = Client(args.server, args.token or None, user, timeout=30.0)
    except ValueError as error:
        args.command_parser.error(f"--server: {error}")
    try:
        return _CLIENT_COMMANDS[args.command](args, client)
    except LazybossError as error:
        print(f"lazyboss: {error}" + (f" ({error.status} {error.code})" if error.status else ""), file=sys.stderr)
        return _EXIT_SERVER


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lazyboss` and `python lazyboss.py`."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        if args.command in _CLIENT_COMMANDS:
            return _run_client_command(args)
        try:
            config = _config_from(args)
        except ValueError as error:
            print(f"lazyboss: {error}", file=sys.stderr)
            return _EXIT_USAGE
        # The database, its WAL and shared memory hold token hashes and job data: not for other users.
        # (Only here: the shell worker's commands keep the user's umask.)
        os.umask(int(config.umask, 8))
        if args.command == "token":
            return _command_token(args, config)
        if args.command == "copy":
            return _command_copy(args, config)
        return serve(config)
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED


if __name__ == "__main__":
    # `python lazyboss.py work --python M:W`: M's `import lazyboss` must find this very module (its Worker class).
    sys.modules.setdefault("lazyboss", sys.modules[__name__])
    sys.exit(main())
