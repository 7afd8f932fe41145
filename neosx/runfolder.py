"""Run-folder bookkeeping: what neosx wrote (the manifest), one writer at a time (the lock).

A run folder may sit next to a user's own files, or be a folder the user made for it;
neosx never removes anything it did not write. Every file neosx writes into a run folder is
listed (relative to the folder) in ``manifest.json``, and ``--overwrite`` removes exactly
those files, then the folders they left empty.

One process writes into a run folder at a time: :func:`locked` holds ``.neosx.lock``
(created exclusively; it holds the owner's host, process id and start time). A lock whose
process is gone on this host is stale and taken over; a live one refuses the second
writer with a message naming the owner.

Writes are atomic (a temporary file in the same folder, then a rename) and leave no
temporary file behind when they fail; JSON is strict (a non-finite float is written as
``null``, never ``NaN`` / ``Infinity``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK",
    "MANIFEST",
    "RunError",
    "atomic_write",
    "clear",
    "dumps",
    "finite_json",
    "locked",
    "record",
    "write_json",
]

MANIFEST = "manifest.json"
LOCK = ".neosx.lock"


class RunError(RuntimeError):
    """A run folder cannot be created, locked, cleared, resumed or read (one line says why)."""


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON's ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON of ``value`` (non-finite floats as ``null``)."""
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)


def atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, then rename it.

    The temporary file is removed if anything fails (disk full, interrupt), so the target
    is either the old file or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        mode="wb" if binary else "w",
    )
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _manifest(run_dir: Path) -> list[str]:
    path = run_dir / MANIFEST
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise RunError(f"{path}: the manifest must be a list of relative paths")
    return entries


def record(run_dir: Path, paths: Iterable[Path]) -> None:
    """Add ``paths`` (files inside ``run_dir``) to the folder's manifest."""
    entries = _manifest(run_dir)
    known = set(entries)
    for path in paths:
        relative = Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
        if relative not in known:
            entries.append(relative)
            known.add(relative)
    atomic_write(run_dir / MANIFEST, lambda h: h.write(json.dumps(entries, indent=1) + "\n"))


def write_json(run_dir: Path, relative: str, value: Any) -> Path:
    """Write strict JSON to ``run_dir / relative`` atomically and record it in the manifest."""
    path = run_dir / relative
    atomic_write(path, lambda h: h.write(dumps(value, indent=2) + "\n"))
    record(run_dir, [path])
    return path


def clear(run_dir: Path) -> list[Path]:
    """Remove what neosx wrote into ``run_dir`` (its manifest), and the folders left empty.

    Files the manifest does not list (a user's own) are kept.

    Returns:
        The files removed.

    Raises:
        RunError: The folder holds no manifest (not written by this neosx), or the
            manifest names a path outside the folder.
    """
    root = run_dir.resolve()
    if not (run_dir / MANIFEST).is_file():
        raise RunError(
            f"{run_dir} holds no neosx manifest ({MANIFEST}), so neosx cannot tell its files "
            "from yours; refusing to overwrite it (remove it yourself or choose another --out)"
        )
    removed = []
    folders = set()
    for entry in _manifest(run_dir):
        path = (run_dir / entry).resolve()
        if root not in path.parents:
            raise RunError(f"{run_dir / MANIFEST}: entry {entry!r} lies outside the run folder")
        if path.is_file():
            path.unlink()
            removed.append(path)
        folders.update(p for p in path.parents if root in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: a user's files are in it
            folder.rmdir()
    (run_dir / MANIFEST).unlink()
    return removed


# -- the lock --------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux ``/proc``), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner still runs (on another host: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = owner.get("process_start")
    return started is None or started == _start_time(pid)


def _owner_text(owner: dict[str, Any]) -> str:
    return (
        f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')}, "
        f"{owner.get('action', 'neosx')})"
    )


@contextlib.contextmanager
def locked(run_dir: Path, action: str) -> Iterator[None]:
    """Hold the run folder's lock for ``action`` (e.g. ``"neosx run"``), creating the folder.

    Raises:
        RunError: Another live process holds the lock, or the folder cannot be created.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunError(f"cannot create run folder {run_dir}: a file is in the way") from None
    except NotADirectoryError:
        raise RunError(f"cannot create run folder {run_dir}: a file is in the way") from None
    except OSError as error:
        raise RunError(f"cannot create run folder {run_dir}: {error.strerror}") from None
    path = run_dir / LOCK
    pid = os.getpid()
    me = {
        "pid": pid,
        "host": socket.gethostname(),
        "process_start": _start_time(pid),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": action,
    }
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
            except (OSError, ValueError):
                owner = {}
            if isinstance(owner, dict) and _alive(owner):
                raise RunError(
                    f"run folder {run_dir} is in use by {_owner_text(owner)}; wait for it to "
                    f"end (if it is gone, remove {path})"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its process is gone
            continue
        except OSError as error:
            raise RunError(f"cannot write into run folder {run_dir}: {error.strerror}") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(me) + "\n")
        break
    else:
        raise RunError(f"cannot take the lock {path}: another process keeps taking it")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
