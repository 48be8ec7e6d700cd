"""Consistent reads of a Secret mounted as a volume.

The kubelet (pkg/volume/util/atomic_writer.go) never edits files in place. It
writes every data key into a fresh ``..<timestamp>`` directory, points a
temporary symlink at it, renames that over ``..data`` (an atomic swap), and
then deletes the old timestamped directory. The visible ``api-key`` entries
are symlinks through ``..data``.

Reading through the visible symlinks resolves ``..data`` once per file, so two
files read one after the other can come from two different versions. Here
``..data`` is resolved once and every file is read inside that one
directory, which is never modified after the swap. If the directory or a file
in it vanished between resolving and opening (the kubelet deletes a version
after the next swap), the read starts over. A folder without ``..data`` (plain files, e.g. local
development) is read directly.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass

from apikey_operator.client.errors import SourceUnavailable

DATA_DIR_LINK = "..data"
# Each retry follows a swap that happened within microseconds of our read; a
# kubelet swaps at most every sync period, so a handful is plenty. The first
# retry is immediate; later ones wait a little longer each time (RETRY_PAUSES,
# about 0.1 s in all), so a reader that was descheduled across several swaps on a
# busy machine lets the writer finish instead of losing the same race again.
MAX_ATTEMPTS = 8
RETRY_PAUSES = (0.0, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032)
# A key file holds one key (at most a few hundred bytes); anything larger is not ours and is
# never read whole into memory.
MAX_FILE_BYTES = 64 * 1024
# What the kubelet's atomic writer names a version directory: "..2026_12_01_22_11_52.123456789".
_VERSION_DIR = re.compile(r"^\.\.[^/\x00]+$")


@dataclass(frozen=True)
class Snapshot:
    """The files of one version of the volume.

    `signature` changes whenever the volume changes: the ``..data`` target for
    a kubelet volume, the files' (inode, size, mtime) for a plain folder.
    `values` maps each requested name to its content, None when absent.
    """

    signature: tuple[object, ...]
    values: dict[str, bytes | None]


def signature(directory: str, names: Iterable[str]) -> tuple[object, ...]:
    """A cheap fingerprint of the volume's state (one readlink for a kubelet volume)."""
    try:
        return ("data", os.readlink(os.path.join(directory, DATA_DIR_LINK)))
    except OSError:
        pass  # no ..data symlink: a plain folder, or no folder at all
    stats: list[object] = ["plain"]
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except FileNotFoundError:
            stats.append(None)
        else:
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stats)


def read_snapshot(directory: str, names: Iterable[str]) -> Snapshot:
    """Read `names` from one consistent version of the volume at `directory`.

    Raises SourceUnavailable when the folder does not exist or cannot be read.
    Files that do not exist in the version read come back as None.
    """
    wanted = tuple(names)
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_PAUSES[min(attempt, len(RETRY_PAUSES)) - 1])
        link = os.path.join(directory, DATA_DIR_LINK)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            if not os.path.isdir(directory):
                raise SourceUnavailable(f"the key folder {directory} does not exist") from None
            return _read_plain(directory, wanted)
        except OSError as exc:
            if os.path.isdir(link):
                return _read_plain(directory, wanted)
            raise SourceUnavailable(
                f"cannot resolve {link} ({exc.strerror or type(exc).__name__})"
            ) from None
        if not _VERSION_DIR.match(target) or target == "..":
            # An absolute or nested ..data target would lead the read out of the mount.
            raise SourceUnavailable(f"{link} points outside the key folder; refusing to follow")
        version_dir = os.path.join(directory, target)
        try:
            values = {name: _read_optional(os.path.join(version_dir, name), directory)
                      for name in wanted}
        except FileNotFoundError:
            continue  # the version directory vanished: a newer version replaced it
        if any(value is None for value in values.values()) and _target(link) != target:
            # A file is missing: either absent from this version, or the kubelet is
            # deleting this version's directory after a newer swap. The kubelet only
            # deletes versions that ..data no longer names, so re-resolve and retry.
            continue
        return Snapshot(("data", target), values)
    raise SourceUnavailable(
        f"the key folder {directory} kept changing during {MAX_ATTEMPTS} read attempts"
    )


def _target(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def _read_optional(path: str, root: str) -> bytes | None:
    """The file's bytes, None if it does not exist. Raises FileNotFoundError when
    its directory does not exist either. Only a regular file inside `root` (after symlinks)
    and at most MAX_FILE_BYTES long is read: a FIFO, a device or a link out of the mount is
    refused, never opened for a blocking read."""
    name = os.path.basename(path)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        if not os.path.lexists(path):
            if not os.path.isdir(os.path.dirname(path)):
                raise FileNotFoundError(path)
            return None
        raise SourceUnavailable(f"{name} is a link out of the key folder; refusing to read it")
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(path)):
            raise
        return None
    except OSError as exc:
        raise SourceUnavailable(
            f"cannot read {name} ({exc.strerror or type(exc).__name__})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceUnavailable(f"{name} is not a regular file; refusing to read it")
        if info.st_size > MAX_FILE_BYTES:
            raise SourceUnavailable(
                f"{name} is {info.st_size} bytes, more than a key file holds "
                f"({MAX_FILE_BYTES}); refusing to read it")
        chunks = []
        remaining = MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_FILE_BYTES:  # it grew while we read it
            raise SourceUnavailable(f"{name} is larger than a key file holds; refusing it")
        return data
    except OSError as exc:
        raise SourceUnavailable(
            f"cannot read {name} ({exc.strerror or type(exc).__name__})"
        ) from None
    finally:
        os.close(fd)


def _read_plain(directory: str, names: tuple[str, ...]) -> Snapshot:
    values: dict[str, bytes | None] = {}
    for name in names:
        try:
            values[name] = _read_optional(os.path.join(directory, name), directory)
        except FileNotFoundError:
            raise SourceUnavailable(f"the key folder {directory} disappeared") from None
    return Snapshot(signature(directory, names), values)


def decode_key(raw: bytes | None) -> str | None:
    """The key in a file's bytes, without surrounding whitespace; None if absent or empty."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text or None
