"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, listening on a unix
socket there only (no TCP port to collide with), stopped and removed afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def postgres_bin() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    for folder in (*BIN_DIRS, *(os.environ.get("PATH", "").split(os.pathsep))):
        if folder and all((Path(folder) / tool).is_file() for tool in
                          ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def why_unavailable() -> str | None:
    """Why no server can be started here (``None`` when one can)."""
    if postgres_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl, postgres) are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to start PostgreSQL as"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield an Optuna storage URL (``postgresql+psycopg://``) of an empty
    database; stop the server and delete its files afterwards."""
    binaries = postgres_bin()
    assert binaries is not None, why_unavailable()
    root = Path(tempfile.mkdtemp(prefix="ase-search-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o755)

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
        "--no-sync")
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
        "-o", f"-k {sock} -c listen_addresses='' -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={sock}"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
