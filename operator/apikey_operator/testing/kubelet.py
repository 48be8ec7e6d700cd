"""Plays the kubelet for a Secret volume: the exact atomic-writer layout.

The kubelet (pkg/volume/util/atomic_writer.go) updates a Secret volume so that
readers never see a partial update:

1. write every data key into a fresh ``..<UTC timestamp>.<random>`` directory;
2. point a temporary symlink ``..data_tmp`` at it and rename it over ``..data``
   (one atomic swap);
3. create the visible per-key symlinks ``<key> -> ..data/<key>`` for new keys
   and remove the ones for keys that are gone;
4. delete the old timestamped directory.

`SecretVolume` does the same, so tests can project a Secret into a folder and
rotate it under running readers; `SecretVolumeSync` keeps one in step with a
Secret the way the kubelet's periodic sync does. Standard library only.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

DATA_DIR_LINK = "..data"
TMP_DATA_DIR_LINK = "..data_tmp"
FILE_MODE = 0o644  # a Secret volume's defaultMode (420)


class SecretVolume:
    """A folder kept in the kubelet's layout; `write` replaces its whole content atomically.

    Safe to call from several threads (writes are serialised, as the kubelet does
    per volume).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, data: Mapping[str, str | bytes]) -> bool:
        """Project `data` (data key -> value) as the volume's new content.

        Returns False and changes nothing when the content is already the same,
        like the kubelet, which skips unchanged payloads.
        """
        payload = {name: _as_bytes(value) for name, value in data.items()}
        for name in payload:
            _check_name(name)
        with self._lock:
            old_target = self._data_target()
            if old_target is not None and self._read_dir(old_target) == payload:
                return False
            new_dir = tempfile.mkdtemp(
                prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=self.directory
            )
            # As the kubelet does: readable by the pod's user, whatever its uid.
            os.chmod(new_dir, 0o755)  # noqa: S103
            for name, value in payload.items():
                path = os.path.join(new_dir, name)
                with open(path, "wb") as handle:
                    handle.write(value)
                os.chmod(path, FILE_MODE)
            tmp_link = os.path.join(self.directory, TMP_DATA_DIR_LINK)
            if os.path.lexists(tmp_link):
                os.unlink(tmp_link)
            os.symlink(os.path.basename(new_dir), tmp_link)
            os.rename(tmp_link, os.path.join(self.directory, DATA_DIR_LINK))
            self._sync_visible_links(payload)
            if old_target is not None:
                shutil.rmtree(os.path.join(self.directory, old_target), ignore_errors=True)
            return True

    def write_secret_data(self, data: Mapping[str, str] | None) -> bool:
        """Project a Secret's ``data`` field (base64 values), as the kubelet decodes it."""
        return self.write({name: base64.b64decode(value) for name, value in (data or {}).items()})

    def read(self) -> dict[str, bytes]:
        """The content the volume shows now (through ``..data``)."""
        with self._lock:
            target = self._data_target()
            return {} if target is None else self._read_dir(target)

    def remove(self) -> None:
        """Tear the volume down (the pod is gone)."""
        with self._lock:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _data_target(self) -> str | None:
        try:
            return os.readlink(os.path.join(self.directory, DATA_DIR_LINK))
        except FileNotFoundError:
            return None

    def _read_dir(self, target: str) -> dict[str, bytes]:
        base = os.path.join(self.directory, target)
        content: dict[str, bytes] = {}
        for name in os.listdir(base):
            with open(os.path.join(base, name), "rb") as handle:
                content[name] = handle.read()
        return content

    def _sync_visible_links(self, payload: Mapping[str, bytes]) -> None:
        for name in payload:
            link = os.path.join(self.directory, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(DATA_DIR_LINK, name), link)
        for entry in os.listdir(self.directory):
            if entry.startswith("..") or entry in payload:
                continue
            path = os.path.join(self.directory, entry)
            if os.path.islink(path):
                os.unlink(path)


SecretData = Mapping[str, str] | None


class SecretVolumeSync:
    """Plays one pod's kubelet: every `period` seconds, projects the Secret's data
    (base64 values, as `read_data` returns them; None while the Secret is absent, which
    leaves the volume as it is) into `volume`, in a background thread.

    Two syncs with different periods over two folders behave like two pods on two
    nodes, which see the same change at different moments.
    """

    def __init__(
        self, volume: SecretVolume, read_data: Callable[[], SecretData], period: float = 0.1
    ) -> None:
        self.volume = volume
        self.read_data = read_data
        self.period = period
        self.updates = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet-sync", daemon=True)

    def start(self) -> SecretVolumeSync:
        self.sync()
        self._thread.start()
        return self

    def sync(self) -> bool:
        """One sync now; True if the volume changed."""
        data = self.read_data()
        if data is None:
            return False
        changed = self.volume.write_secret_data(data)
        self.updates += int(changed)
        return changed

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> SecretVolumeSync:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.sync()
            except Exception as exc:  # keep syncing, like the kubelet; tests read .errors
                self.errors.append(exc)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _check_name(name: str) -> None:
    # Secret data keys are [-._a-zA-Z0-9]+ and may not start with "..".
    if not name or name.startswith("..") or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid Secret data key {name!r}")
