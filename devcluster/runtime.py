"""Process and directory bookkeeping shared by the cluster components of the test environment.

Every component (control plane, Pushgateway, Prometheus, pod runner) lives in its own
directory under RUNTIME_ROOT with pidfiles of the processes it started and an owner record.
A crashed test run leaves these behind; `cleanup_stale()` finds them by owner liveness and
kills exactly the recorded processes (pid + start time, so a recycled pid is never hit).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

RUNTIME_ROOT = Path(os.environ.get("TROP_RUNTIME", "/run/traceroute-operator"))
CACHE = Path(os.environ.get("TROP_CACHE", "/var/cache/traceroute-operator"))
VENV_BIN = Path(os.environ.get("TROP_VENV", str(CACHE / "venv"))) / "bin"

_OWNER_FILE = "owner.json"
_PIDS_DIR = "pids"
_CREATED_PATHS = "created-paths"
_OWNED_CGROUPS = "owned-cgroups"
_OWNED_GLOBS = "owned-globs"
_CLEANUP_HOOKS = "cleanup-hooks"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup names a component may own: one path element, never a hierarchy's own files
_CGROUP_NAME = re.compile(r"^trop-[a-z0-9-]{1,60}$")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def local_session() -> requests.Session:
    """HTTP to the environment's own loopback/lab services: never through HTTP(S)_PROXY, and
    REQUESTS_CA_BUNDLE must not override a CA the caller sets."""
    session = requests.Session()
    session.trust_env = False
    return session


def http_ok(url: str, *, timeout: float = 3.0) -> bool:
    """GET `url` answers 200 (False when it does not answer at all)."""
    try:
        with local_session() as session:
            return session.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def process_status_kib(pid: int, key: str) -> int:
    """A `/proc/PID/status` size line in KiB (`VmRSS`, `VmHWM`), 0 when the line is missing."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (utime + stime from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int, start_time: int | None) -> bool:
    current = process_start_time(pid)
    if current is None:
        return False
    if start_time is not None and current != start_time:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int | None

    def alive(self) -> bool:
        return _alive(self.pid, self.start_time)


def terminate(records: Sequence[ProcessRecord], grace_seconds: float = 5.0) -> None:
    """SIGTERM each recorded process group, SIGKILL what is still alive after the grace time."""
    living = [r for r in records if r.alive()]
    for record in living:
        _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(r.alive() for r in living):
        time.sleep(0.05)
    for record in living:
        if record.alive():
            _signal_group(record, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(r.alive() for r in living):
        time.sleep(0.05)


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    # processes are started in their own session: the group id is the pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(record.pid, sig)


class RuntimeDir:
    """One component's directory under RUNTIME_ROOT: files, logs and pidfiles.

    `owner_pid=None` marks an environment started by hand (`python -m devcluster up`):
    stale-cleanup leaves it alone, only `down` or `cleanup --all` remove it.
    """

    def __init__(self, kind: str, *, owner_pid: int | None) -> None:
        RUNTIME_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(RUNTIME_ROOT, 0o755)
        self.path = RUNTIME_ROOT / f"{kind}-{uuid.uuid4().hex[:10]}"
        self.path.mkdir(mode=0o700)
        (self.path / _PIDS_DIR).mkdir()
        owner = {
            "kind": kind,
            "owner_pid": owner_pid,
            "owner_start": process_start_time(owner_pid) if owner_pid else None,
            "created": time.time(),
        }
        (self.path / _OWNER_FILE).write_text(json.dumps(owner))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def existing(cls, path: Path) -> RuntimeDir:
        obj = cls.__new__(cls)
        obj.path = path
        obj._procs = {}
        return obj

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        die_with_owner: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process, log to <dir>/<name>.log, record its pidfile."""
        full = list(argv)
        if die_with_owner:
            # a SIGKILLed test run must not leave servers behind
            full = ["setpriv", "--pdeathsig", "KILL", "--", *full]
        log: IO[bytes] = open(self.log_path(name), "ab")  # noqa: SIM115 - child keeps it
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[name] = proc
        record = {"pid": proc.pid, "start_time": process_start_time(proc.pid), "argv": full}
        (self.path / _PIDS_DIR / f"{name}.json").write_text(json.dumps(record))
        return proc

    def note_created_path(self, path: Path) -> None:
        """Remember a path created outside this directory (a mount point on the host) so that
        stale-cleanup can remove it if it is still empty."""
        with open(self.path / _CREATED_PATHS, "a") as f:
            f.write(f"{path}\n")

    def note_cgroup(self, name: str) -> None:
        """Remember a top-level cgroup (`trop-...`, in every hierarchy under CGROUP_ROOT) that
        this component owns: removal kills every process in its tree, then removes it. This
        catches what no pidfile names (a runtime's shims and their containers)."""
        if not _CGROUP_NAME.match(name):
            raise ValueError(f"cgroup name {name!r}: must match {_CGROUP_NAME.pattern}")
        with open(self.path / _OWNED_CGROUPS, "a") as f:
            f.write(f"{name}\n")

    def note_owned_glob(self, pattern: str) -> None:
        """Remember files outside this directory that belong to it alone (a runtime's cache
        entries under its own network name): removal deletes every file the glob matches."""
        with open(self.path / _OWNED_GLOBS, "a") as f:
            f.write(f"{pattern}\n")

    def note_cleanup_hook(self, function: str) -> None:
        """Remember `module:function`, called with this directory's path before its mounts
        and files go (after its processes): for leftovers only the component can name."""
        module, _, name = function.partition(":")
        if not module or not name:
            raise ValueError(f"cleanup hook {function!r}: expected module:function")
        with open(self.path / _CLEANUP_HOOKS, "a") as f:
            f.write(f"{function}\n")

    def log_path(self, name: str) -> Path:
        return self.path / f"{name}.log"

    def log_tail(self, name: str, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path(name).read_bytes()
        except FileNotFoundError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def records(self) -> list[ProcessRecord]:
        return _read_records(self.path)

    def stop(self, names: Sequence[str] | None = None, grace_seconds: float = 5.0) -> None:
        records = [r for r in self.records() if names is None or r.name in names]
        terminate(records, grace_seconds)
        for record in records:
            proc = self._procs.pop(record.name, None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
            with contextlib.suppress(FileNotFoundError):
                (self.path / _PIDS_DIR / f"{record.name}.json").unlink()

    def remove(self, grace_seconds: float = 5.0) -> None:
        self.stop(grace_seconds=grace_seconds)
        _remove_everything(self.path)


def _remove_everything(path: Path) -> None:
    """What stop() leaves: processes in owned cgroups, mounts under the directory, owned and
    created paths, then the directory itself (never through a mount that is still there)."""
    _kill_owned_cgroups(path)
    _run_cleanup_hooks(path)
    _remove_created_paths(path)
    _remove_owned_globs(path)
    if unmount_under(path):
        shutil.rmtree(path, ignore_errors=True)


def _noted(path: Path, name: str) -> list[str]:
    try:
        return [line for line in (path / name).read_text().split("\n") if line]
    except FileNotFoundError:
        return []


def cgroup_dirs(name: str) -> list[Path]:
    """The directories of top-level cgroup `name` in every mounted hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [h / name for h in sorted(CGROUP_ROOT.iterdir()) if (h / name).is_dir()]


def cgroup_pids(name: str) -> set[int]:
    """Every process in the tree of top-level cgroup `name` (any hierarchy)."""
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _kill_owned_cgroups(path: Path) -> None:
    for name in _noted(path, _OWNED_CGROUPS):
        if not _CGROUP_NAME.match(name):
            continue
        # bounded: a process forking as fast as it is killed would otherwise keep this busy
        for _round in range(50):
            pids = cgroup_pids(name)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for top in cgroup_dirs(name):
            # children before parents
            for cgroup in sorted((d for d in top.rglob("*") if d.is_dir()), key=_depth):
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _run_cleanup_hooks(path: Path) -> None:
    for hook in _noted(path, _CLEANUP_HOOKS):
        module, _, name = hook.partition(":")
        try:
            getattr(importlib.import_module(module), name)(path)
        except Exception as exc:  # one component's failure must not stop the others' cleanup
            print(f"cleanup hook {hook} for {path} failed: {exc!r}", file=sys.stderr)


def _depth(path: Path) -> int:
    return -len(path.parts)


def _remove_owned_globs(path: Path) -> None:
    for pattern in _noted(path, _OWNED_GLOBS):
        base = Path(pattern).parent
        for match in base.glob(Path(pattern).name) if base.is_dir() else ():
            with contextlib.suppress(OSError):
                if match.is_file() or match.is_symlink():
                    match.unlink()


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (from /proc/self/mountinfo)."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # field 5 is the mount point, with spaces and the like octal-escaped
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(set(found), key=_depth)


def unmount_under(path: Path) -> bool:
    """Detach every mount at or below `path`; True when none is left."""
    for _round in range(3):
        points = mounts_under(path)
        if not points:
            return True
        for point in points:
            subprocess.run(
                ["umount", "-l", str(point)], capture_output=True, timeout=30, check=False
            )
    return not mounts_under(path)


def _read_records(path: Path) -> list[ProcessRecord]:
    records = []
    for pidfile in sorted((path / _PIDS_DIR).glob("*.json")):
        try:
            data: dict[str, Any] = json.loads(pidfile.read_text())
        except (OSError, ValueError):
            continue
        records.append(ProcessRecord(pidfile.stem, int(data["pid"]), data.get("start_time")))
    return records


def _remove_created_paths(path: Path) -> None:
    """Remove noted paths that are still empty, deepest first; never anything with content."""
    try:
        noted = (path / _CREATED_PATHS).read_text().split("\n")
    except FileNotFoundError:
        return
    for entry in sorted({p for p in noted if p}, key=len, reverse=True):
        target = Path(entry)
        with contextlib.suppress(OSError):
            if target.is_dir() and not target.is_symlink():
                target.rmdir()
            elif target.is_file() and target.stat().st_size == 0:
                target.unlink()


def _owner(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((path / _OWNER_FILE).read_text())
        return data
    except (OSError, ValueError):
        return {}


def runtime_dirs() -> list[Path]:
    if not RUNTIME_ROOT.is_dir():
        return []
    return sorted(p for p in RUNTIME_ROOT.iterdir() if p.is_dir())


def is_stale(path: Path) -> bool:
    owner = _owner(path)
    pid = owner.get("owner_pid")
    if pid is None:
        # started by hand: never stale unless its owner file is missing (half-created)
        return not owner
    return not _alive(int(pid), owner.get("owner_start"))


def is_manual(path: Path) -> bool:
    owner = _owner(path)
    return bool(owner) and owner.get("owner_pid") is None


def cleanup_stale(*, include_manual: bool = False) -> list[Path]:
    """Kill the recorded processes of dead owners' directories and remove those directories."""
    removed = []
    for path in runtime_dirs():
        if is_stale(path) or (include_manual and is_manual(path)):
            terminate(_read_records(path), grace_seconds=3.0)
            _remove_everything(path)
            removed.append(path)
    return removed


def wait_until(
    predicate: Any,
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Poll `predicate()` until it returns a truthy value; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
