"""What every `layerboot` command module shares: the common options, opening a config and its
workdir, the workdir lock, Prefect's environment, and turning expected errors into one line
(exit 2) instead of a traceback. Imports no other command module (heavy imports stay inside
functions so `--help` stays fast)."""

from __future__ import annotations

import errno
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="Config YAML, or a profile name (tiny, intrinsic_tiny, flux).", show_default=True)
]
WorkdirOpt = Annotated[
    Optional[str],
    typer.Option("--workdir", "-w", help="Run folder: a path or fsspec URI (s3://bucket/run). Default: runs/<run name>."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set sample.steps=2 (repeatable; values are YAML)."),
]
EXIT_USAGE = 2
DEBUG = {"on": False}


def debugging() -> bool:
    return DEBUG["on"] or os.environ.get("LAYERBOOT_DEBUG", "") not in ("", "0")


# errors of the environment the user can fix: a workdir that is a file or a folder where a file
# belongs, not permitted, read-only, full; a path that is not there
_USER_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOENT,
                errno.EEXIST, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP}


def with_overrides(config_path: str, sets: list[str] | None) -> str:
    """The config path to use: `config_path` itself, or with --set overrides a validated YAML file
    of the result (stages reload the config from a path; same overrides, same file and hash)."""
    from configs import write_effective_config

    return str(write_effective_config(config_path, sets or ()))


def _user_error_types() -> tuple[type[Exception], ...]:
    """Exceptions that mean "your input is wrong", not "layerboot is broken". Called when an
    exception is being matched, so model-layer types count once their module is loaded (importing
    torch just to name them would slow every command)."""
    from configs import ConfigError
    from storage.blobs import BlobError
    from storage.fs import ForeignFiles
    from storage.images import ImageError
    from storage.imports import ImportFailed
    from storage.schema import SchemaError
    from storage.overrides import OverrideError
    from storage.store import StoreError  # includes storage.lock.LockHeld

    types = [ConfigError, ImportFailed, ImageError, SchemaError, StoreError, BlobError, OverrideError,
             ForeignFiles, FileNotFoundError, typer.BadParameter]
    lora, encoded = sys.modules.get("models.iclora.lora"), sys.modules.get("models.iclora.encoded")
    if lora is not None:
        types.append(lora.AdapterError)
    if encoded is not None:
        types.append(encoded.CacheEntryError)
    return tuple(types)


def _describe(e: BaseException) -> str | None:
    """The one line for an expected error, or None for a bug (which keeps its traceback)."""
    if isinstance(e, _user_error_types()):
        if isinstance(e, OSError) and e.errno is not None and e.strerror:
            return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
        return str(e)
    if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror or e}" if where else f"{e.strerror or e}"
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    store_errors = [x for x in chain if (type(x).__module__ or "").startswith(("botocore", "aiobotocore", "s3fs"))]
    if store_errors:  # credentials, endpoint, permissions (s3fs re-raises a 403 as a bare PermissionError)
        named = lambda x: f"{type(x).__name__}: {' '.join(str(x).split())}"  # noqa: E731
        line = f"object store: {named(e)}" + (f" ({named(store_errors[0])})" if store_errors[0] is not e else "")
        if isinstance(e, PermissionError):
            line += "; check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) and the bucket's permissions"
        return line
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where the process is, as Ctrl-C raises KeyboardInterrupt: what a command
    undoes on a refusal or a Ctrl-C (blobs it wrote, its lock) is undone for it too."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated instead of ending the process on the spot."""
    def stop(signum, frame) -> None:  # noqa: ARG001
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected failures become one clear line on stderr and exit code 2, never a traceback
    (unless --debug)."""
    try:
        yield
    except KeyboardInterrupt as e:  # Ctrl-C (or SIGTERM, see sigterm_interrupts) outside run/resume: what was written is undone
        if debugging():
            raise
        signum = getattr(e, "signum", signal.SIGINT)
        typer.echo(f"\ninterrupted ({signum.name})", err=True)
        raise typer.Exit(128 + signum) from None
    except Exception as e:
        line = _describe(e)
        if line is None or debugging():
            raise
        typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def open_config(config_path: str, workdir: str | None, must_exist: bool = False):
    """The config and the workdir's store. A workdir that is there must be a folder; with
    `must_exist` (commands that only read one) it must be there."""
    from configs import load_config
    from storage.store import Store, StoreError

    cfg = load_config(config_path)
    store = Store(workdir or str(Path("runs") / cfg.run.name))
    shown = store.loc.root if store.loc.is_local else store.uri
    if store.loc.exists(store.loc.root):
        if not store.loc.fs.isdir(store.loc.root):
            raise StoreError(f"workdir {shown} is not a directory")
    elif must_exist:
        raise StoreError(f"workdir {shown} does not exist")
    return cfg, store


EXIT_FAILED = 1


RoundsOpt = Annotated[Optional[int], typer.Option("--rounds", min=1, help="Rounds to reach (default: bootstrap.rounds).")]


def refuse_unmarked(store) -> None:
    """A command that commits rounds must not run past a round whose marker was lost."""
    from storage.store import StoreError

    if unmarked := store.unmarked_rounds():
        raise StoreError(f"round(s) {unmarked} in {store.uri} hold a manifest without a commit marker; "
                         "`layerboot fsck` says how to re-mark them before rounds are run")


def took_over(holder, reason: str) -> None:
    """Said on stderr when a command takes over the stale lock of a dead process."""
    typer.echo(f"taking over the lock of {holder.describe()}: {reason}", err=True)


@contextmanager
def workdir_lock(store, command: str) -> Iterator:
    """Hold the workdir lock (storage/lock.py) for a command that writes rounds: a second one on
    the same workdir is refused naming the holder; a stale lock of a dead process is taken over."""
    from storage.lock import WorkdirLock

    with WorkdirLock(store.loc, command, on_takeover=took_over) as lock:
        yield lock


PREFECT_MIN_FREE = 64 << 20  # bytes: a micro run's prefect.db is ~2 MB after one round, ~8 MB after two


def prefect_home(store) -> Path | None:
    """Where the ephemeral Prefect server will keep its SQLite database (prefect_env), or None when
    PREFECT_API_URL names a server of the user's."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if os.environ.get("PREFECT_HOME"):
        return Path(os.environ["PREFECT_HOME"]).expanduser()
    return Path(store.loc.root) / ".prefect" if store.loc.is_local else Path.home() / ".layerboot" / "prefect"


def check_prefect_room(store) -> None:
    """Refuse, before anything is written, to start the ephemeral Prefect server on a disk without
    room for its database: on a full disk its migrations fail inside the server process, which
    printed ~500 lines of SQLite tracebacks and then the client's misleading "Timed out while
    attempting to connect to ephemeral Prefect API server"."""
    import shutil

    from storage.store import StoreError

    home = prefect_home(store)
    if home is None:
        return
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < PREFECT_MIN_FREE:
        raise StoreError(f"{home}: {free / (1 << 20):.1f} MiB free on its disk, where the ephemeral Prefect server "
                         f"keeps its database (prefect.db, a few MiB a round): free at least "
                         f"{PREFECT_MIN_FREE >> 20} MiB, or point PREFECT_API_URL at a Prefect server (nothing was "
                         "written)")


def prefect_env(store) -> None:
    """Ephemeral Prefect (SQLite) keeps its state under the workdir, unless the user points
    PREFECT_API_URL at a server. Must run before prefect is imported."""
    if os.environ.get("PREFECT_API_URL"):
        return
    home = Path(store.loc.root) / ".prefect" if store.loc.is_local else Path.home() / ".layerboot" / "prefect"
    home.mkdir(parents=True, exist_ok=True)  # SQLite will not create the folder of its database
    os.environ.setdefault("PREFECT_HOME", str(home))
    # a fresh database takes ~26 s to migrate on 2 cores; Prefect's default allows 20
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the ephemeral server's analytics write races its own startup on SQLite and prints a 60-line
    # "database is locked" traceback on a healthy run; a local throwaway server has nothing to report
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


_WATCHDOG: dict = {}


def children_die_with_this_process() -> None:
    """Start (once) flows/cli/watchdog.py for this process: the processes it starts (the ephemeral
    Prefect server, Dask workers) end with it, even when it is SIGKILLed. In its own session, so a
    signal to this process group (Ctrl-C) does not end it before it has done its work."""
    import subprocess

    if _WATCHDOG.get("pid") == os.getpid():
        return
    subprocess.Popen([sys.executable, "-m", "flows.cli.watchdog", str(os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     cwd=str(Path(__file__).resolve().parents[2]))
    _WATCHDOG["pid"] = os.getpid()


def prefect_logging() -> None:
    """Our stages log to the `layerboot` logger (shards kept/finished); let Prefect show those
    lines in the console and the UI beside its own."""
    extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
    if "layerboot" not in extra.split(","):
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [extra, "layerboot"]))
