"""Opening a study's Optuna storage: the one opener behind ``run``, ``pareto`` and ``export``.

A storage is a path or a URL. A path is a SQLite database or an Optuna journal file: an existing
file is told by its content (SQLite's header, or a first line that is a journal record), a new
or empty one by its suffix (:data:`JOURNAL_SUFFIXES`: a journal, which several drivers on one
machine can share; anything else: SQLite). A ``scheme://`` URL goes to
:class:`optuna.storages.RDBStorage` as it is (an RDB server such as PostgreSQL serves drivers on
several machines).

Opened for reading (``create=False``, what ``pareto`` and ``export`` do), nothing is created or
changed: a missing file is refused instead of letting SQLite make an empty database, and
Optuna's tables are not added to a foreign database. Opened for writing (a search), the path's
folder must be writable, and a journal is read through in full before anything is appended to
it, so a corrupt one is refused and left as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_SUFFIXES", "StudyError", "one_line", "open_storage", "resolve_storage"]

JOURNAL_SUFFIXES = (".journal", ".log")
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StudyError(ValueError):
    """A study cannot be opened or queried as asked; the message says what is wrong and the fix."""


def open_storage(spec: str | Path, *, create: bool = False) -> Any:
    """The Optuna storage *object* behind a path or URL (Ray's OptunaSearch needs an object).

    Args:
        spec: a ``.db`` path (SQLite), a ``.journal``/``.log`` path (Optuna journal) or any
            Optuna storage URL (``sqlite:///studies/dit.db``, ``postgresql+psycopg://...``).
            A relative path is made absolute, so Ray workers in other folders find it.
        create: open for writing, creating the file (and its folder) when missing; otherwise
            the storage must exist and is never changed.

    Raises:
        StudyError: the file is missing (reading) or cannot be written (a read-only folder,
            below a regular file), it is neither a SQLite database nor an Optuna journal, a
            journal does not replay, the URL is malformed, or Optuna cannot use the database.
    """
    if isinstance(spec, str) and "://" in spec:
        return _open_url(spec, create=create)
    path = Path(spec).expanduser().resolve()
    if create:
        from ase_search.files import check_writable

        try:
            check_writable(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StudyError(f"storage {spec}: {err}") from None
    elif not path.exists():
        raise StudyError(
            f"study file not found: {path}; pass the .db or .journal file the search wrote "
            f"(default studies/<arch>.db) or a storage URL")
    if path.is_dir():
        raise StudyError(f"{path} is a directory; pass the study's .db or .journal file inside it")
    kind = _sniff(path, create=create)
    if kind == "journal":
        return _open_journal(path)
    if kind == "sqlite":
        return _open_url(f"sqlite:///{path}", create=create)
    raise StudyError(
        f"{path} is not an Optuna storage: expected a SQLite database (.db) or an Optuna "
        f"journal ({', '.join(JOURNAL_SUFFIXES)}); {kind}")


def resolve_storage(spec: str) -> Any:
    """The storage a search writes to: :func:`open_storage` with ``create=True``."""
    return open_storage(spec, create=True)


def _sniff(path: Path, *, create: bool) -> str:
    """``"sqlite"``, ``"journal"`` or a reason why the file is neither."""
    head = b""
    if path.is_file():
        with path.open("rb") as file:
            head = file.read(4096)
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if path.suffix in JOURNAL_SUFFIXES:
        # Read as a journal whatever it holds, so a damaged one is reported line by line.
        return "journal"
    first = head.split(b"\n", 1)[0].strip()
    if not first:  # new or empty: SQLite makes its database there
        return "sqlite" if create else "the file is empty"
    try:
        record = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if isinstance(record, dict) and "op_code" in record:
        return "journal"  # a journal under another suffix
    return "its content is neither"


def _open_journal(path: Path) -> Any:
    """Open a journal file and replay it in full, refusing a corrupt one untouched."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    def refuse(why: str) -> StudyError:
        return StudyError(f"{path} is not a readable Optuna journal ({why}); move it aside or "
                          f"pass another storage")

    if path.is_file():
        # Optuna skips a last line that does not decode (it may be a write in progress), and
        # then appends after it, which turns it into an error on every later read. A line that
        # ends in a newline is complete, so here it must decode.
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    break
                try:
                    json.loads(line)
                except ValueError:
                    raise refuse(f"line {number} is not JSON") from None
    try:  # the storage replays the whole log when made
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as err:  # Optuna's replay asserts, or misses keys, on foreign records
        raise refuse(f"replaying it fails: {one_line(err)}") from None


def _open_url(url: str, *, create: bool) -> Any:
    import optuna
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as err:
        raise StudyError(f"storage URL {url!r} is malformed ({one_line(err)})") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise StudyError(f"{url} is an in-memory database, which keeps no study; use a "
                             f"file URL")
        if not create:
            # SQLite would silently create an empty database for a missing file.
            if not Path(database).is_file():
                raise StudyError(f"study file not found: {database} (from storage URL {url})")
            with Path(database).open("rb") as f:
                if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                    raise StudyError(f"{database} is not a SQLite database, so not an Optuna "
                                     f"storage")
    try:
        # Reading never creates tables: a foreign database must not change.
        return optuna.storages.RDBStorage(url, skip_table_creation=not create)
    except Exception as err:  # not a database, a newer schema, a server that refuses, ...
        raise StudyError(
            f"{url} is not a readable Optuna storage ({one_line(err)}); check the path/URL and "
            f"that it was written by Optuna {optuna.__version__.split('.')[0]}.x") from None


def one_line(err: BaseException) -> str:
    """``err`` as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
