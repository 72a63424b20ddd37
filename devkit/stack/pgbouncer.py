"""PgBouncer in front of a PostgreSQL, for the tests that check the pipeline behind a pooler.

The binary is Debian's `pgbouncer` package, fetched without root: `apt-get download` puts the
.deb (and the libraries the base system lacks) into a cache under `.scribe/tools`, `dpkg -x`
unpacks them there, and the binary runs with that cache's lib folder on LD_LIBRARY_PATH. A
second fetch finds the unpacked binary and does nothing. Where `apt-get download` cannot work
(no package lists) it falls back to `apt-get update` and `apt-get install pgbouncer` as root,
and says so clearly otherwise.

`python -m devkit.stack.pgbouncer [CACHE]` fetches it (the Makefile's `make pgbouncer`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devkit.stack.processes import ProcessRecord, StackError, spawn
from devkit.stack.services import LOOPBACK, Postgres, Service

# The package and the shared libraries it needs that a minimal Debian 12 lacks.
PACKAGES = ("pgbouncer", "libc-ares2", "libevent-2.1-7")
DEFAULT_CACHE = Path(".scribe/tools/pgbouncer")
SYSTEM_BINARY = Path("/usr/sbin/pgbouncer")
APT_TIMEOUT_S = 300


@dataclass(frozen=True)
class PgBouncerBinary:
    path: Path
    # Folder of the libraries unpacked beside it; None for a system install.
    lib_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        if self.lib_dir is None:
            return {}
        inherited = os.environ.get("LD_LIBRARY_PATH")
        return {
            "LD_LIBRARY_PATH": f"{self.lib_dir}:{inherited}" if inherited else str(self.lib_dir)
        }

    def version(self) -> str:
        result = subprocess.run(
            [str(self.path), "--version"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **self.env},
        )
        if result.returncode != 0:
            raise StackError(f"{self.path} --version failed: {result.stderr.strip()}")
        return result.stdout.splitlines()[0]


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, check=False, timeout=APT_TIMEOUT_S
    )


def _missing_libraries(binary: PgBouncerBinary) -> list[str]:
    result = subprocess.run(
        ["ldd", str(binary.path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **binary.env},
    )
    return [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]


def _unpacked(cache: Path) -> PgBouncerBinary:
    root = cache.resolve() / "root"
    return PgBouncerBinary(root / "usr/sbin/pgbouncer", root / "usr/lib/x86_64-linux-gnu")


def _download(debs: Path, report: Callable[[str], None]) -> str | None:
    """The .debs into `debs`; None, or why apt-get could not download them."""
    debs.mkdir(parents=True, exist_ok=True)
    result = _run(["apt-get", "download", *PACKAGES], cwd=debs)
    if result.returncode != 0 and os.geteuid() == 0:
        report("apt-get download failed; refreshing the package lists (apt-get update)")
        _run(["apt-get", "update"])
        result = _run(["apt-get", "download", *PACKAGES], cwd=debs)
    return None if result.returncode == 0 else result.stderr.strip()


def fetch(
    cache: Path = DEFAULT_CACHE, report: Callable[[str], None] = lambda _: None
) -> PgBouncerBinary:
    """Debian's pgbouncer, unpacked into `cache` once; or the system's, installed as root."""
    binary = _unpacked(cache)
    if not binary.path.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise StackError("PgBouncer is fetched with apt-get and dpkg (Debian); neither found")
        debs = cache / "debs"
        why = _download(debs, report)
        if why is None:
            for deb in sorted(debs.glob("*.deb")):
                result = _run(["dpkg", "-x", str(deb), str(cache / "root")])
                if result.returncode != 0:
                    raise StackError(f"dpkg -x {deb.name} failed: {result.stderr.strip()}")
            report(f"PgBouncer unpacked into {cache}")
        elif os.geteuid() == 0:
            report(f"apt-get download failed ({why}); installing the pgbouncer package")
            result = _run(["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"])
            if result.returncode != 0:
                raise StackError(f"apt-get install pgbouncer failed: {result.stderr.strip()}")
            binary = PgBouncerBinary(SYSTEM_BINARY)
        else:
            raise StackError(
                f"could not fetch PgBouncer: apt-get download {' '.join(PACKAGES)} failed ({why}); "
                "run `apt-get update` as root, or install it: apt-get install pgbouncer"
            )
    missing = _missing_libraries(binary)
    if missing:
        raise StackError(
            f"{binary.path} needs shared libraries this system lacks: {', '.join(missing)}"
        )
    return binary


class PgBouncer(Service):
    """PgBouncer on a loopback port in front of the PostgreSQL at `server_port`: trust
    authentication (as the embedded PostgreSQL), every database passed through.

    `pool_size` server connections per database and user, handed out round-robin, so in
    transaction mode consecutive transactions of one client really land on different server
    connections (a pooler under load does the same; an idle one would hide session state)."""

    name = "pgbouncer"
    env_var = "SCRIBE_DATABASE_URL"

    def __init__(
        self,
        root: Path,
        binary: PgBouncerBinary,
        server_port: int,
        pool_mode: str = "transaction",
        pool_size: int = 3,
    ) -> None:
        super().__init__(root)
        self.binary = binary
        self.server_port = server_port
        self.pool_mode = pool_mode
        self.pool_size = pool_size

    def config(self, port: int) -> str:
        userlist = self.root / "pgbouncer-users.txt"
        userlist.write_text('"postgres" ""\n')
        return "\n".join(
            [
                "[databases]",
                f"* = host={LOOPBACK} port={self.server_port}",
                "[pgbouncer]",
                f"listen_addr = {LOOPBACK}",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {userlist}",
                f"pool_mode = {self.pool_mode}",
                f"default_pool_size = {self.pool_size}",
                f"min_pool_size = {self.pool_size}",
                "server_round_robin = 1",
                "max_client_conn = 500",
                "",
            ]
        )

    def start(self, port: int) -> ProcessRecord:
        self.root.mkdir(parents=True, exist_ok=True)
        ini = self.root / "pgbouncer.ini"
        ini.write_text(self.config(port))
        cmd = [str(self.binary.path), str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: it runs as the embedded PostgreSQL's user.
            try:
                pwd.getpwnam(Postgres.system_user)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--user-group", Postgres.system_user], check=True
                )
            cmd[1:1] = ["-u", Postgres.system_user]
        return spawn(cmd, self.log_path, env=self.binary.env)

    def url(self, port: int) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{port}/postgres"


if __name__ == "__main__":
    fetched = fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE, print)
    print(f"{fetched.version()}: {fetched.path}")
