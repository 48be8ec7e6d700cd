"""MountedSecretSource and the kubelet volume writer: a real atomic ``..data`` swap."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.process
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from apikey_operator.client import ApiKeyProvider, MountedSecretSource, SourceUnavailable
from apikey_operator.client._volume import read_snapshot
from apikey_operator.testing.kubelet import SecretVolume

pytestmark = pytest.mark.unit

SWAPS = 2000
READERS = 2
_SPAWN = multiprocessing.get_context("spawn")


def test_the_writer_produces_the_kubelet_layout(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write({"api-key": "k1", "api-key-previous": "k0"})
    entries = set(os.listdir(tmp_path))
    stamped = [e for e in entries if e.startswith("..") and e != "..data"]
    assert len(stamped) == 1
    assert stamped[0].startswith("..20") and "." in stamped[0][2:]
    assert entries == {"..data", stamped[0], "api-key", "api-key-previous"}
    assert os.readlink(tmp_path / "..data") == stamped[0]
    assert os.readlink(tmp_path / "api-key") == "..data/api-key"
    assert (tmp_path / "api-key").read_text() == "k1"
    assert oct((tmp_path / stamped[0] / "api-key").stat().st_mode & 0o777) == oct(0o644)


def test_the_writer_swaps_versions_and_cleans_up(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write({"api-key": "k1", "api-key-previous": "k0"})
    first = os.readlink(tmp_path / "..data")
    volume.write({"api-key": "k1"})
    second = os.readlink(tmp_path / "..data")
    assert second != first
    assert not (tmp_path / first).exists()
    assert not os.path.lexists(tmp_path / "api-key-previous")
    assert volume.read() == {"api-key": b"k1"}


def test_an_unchanged_payload_is_not_rewritten(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    assert volume.write({"api-key": "k1"})
    target = os.readlink(tmp_path / "..data")
    assert not volume.write({"api-key": b"k1"})
    assert os.readlink(tmp_path / "..data") == target


def test_secret_data_is_base64_decoded(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write_secret_data({"api-key": "azE="})
    assert (tmp_path / "api-key").read_bytes() == b"k1"


def test_invalid_data_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SecretVolume(tmp_path).write({"..data": "x"})


def test_the_source_reads_the_current_key(tmp_path: Path) -> None:
    SecretVolume(tmp_path).write({"api-key": "k1\n", "other": "x"})
    assert MountedSecretSource(str(tmp_path)).read() == "k1"
    assert MountedSecretSource(str(tmp_path), key="other").read() == "x"


def test_a_plain_folder_is_read_directly(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("plain-key\n")
    assert MountedSecretSource(str(tmp_path)).read() == "plain-key"


@pytest.mark.parametrize(
    "content", [None, "", "  \n"], ids=["missing file", "empty file", "blank file"]
)
def test_a_missing_or_empty_key_is_unavailable(tmp_path: Path, content: str | None) -> None:
    data = {"other": "x"} if content is None else {"api-key": content}
    SecretVolume(tmp_path).write(data)
    with pytest.raises(SourceUnavailable, match="api-key"):
        MountedSecretSource(str(tmp_path)).read()


def test_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    provider = ApiKeyProvider(MountedSecretSource(str(tmp_path / "absent")))
    with pytest.raises(SourceUnavailable, match="does not exist"):
        provider.get()


def _big_key(i: int) -> str:
    # Large values make a torn read (part of one write) detectable if it ever happened.
    return f"k{i:05d}_" + hashlib.sha256(str(i).encode()).hexdigest() * 64


def _swap_keys(directory: str) -> None:
    volume = SecretVolume(directory)
    for i in range(1, SWAPS):
        volume.write({"api-key": _big_key(i)})


def _swap_pairs(directory: str) -> None:
    volume = SecretVolume(directory)
    for i in range(2, SWAPS):
        volume.write({"api-key": f"{i:05d}", "api-key-previous": f"{i - 1:05d}"})


def _read_while(writer: multiprocessing.process.BaseProcess, read: Callable[[], None]) -> None:
    """Run `read` in READERS threads for as long as the writer process swaps versions.

    The writer is a separate process, like the kubelet, so the swaps really run in
    parallel with the reads instead of taking turns under the GIL."""
    failures: list[BaseException] = []

    def loop() -> None:
        while writer.is_alive():
            try:
                read()
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=loop) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    writer.join(timeout=120)
    for thread in threads:
        thread.join(timeout=30)
    assert writer.exitcode == 0
    assert failures == []


@pytest.mark.slow
def test_readers_never_see_a_partial_key_during_thousands_of_swaps(tmp_path: Path) -> None:
    SecretVolume(tmp_path).write({"api-key": _big_key(0)})
    source = MountedSecretSource(str(tmp_path))
    written = {_big_key(i) for i in range(SWAPS)}
    seen: set[str] = set()
    bad: list[str] = []

    def read() -> None:
        value = source.read()
        if value not in written:
            bad.append(value[:8])
        seen.add(value)

    writer = _SPAWN.Process(target=_swap_keys, args=(str(tmp_path),))
    writer.start()
    _read_while(writer, read)
    assert bad == []
    # The readers really ran during the swaps, not only before or after them.
    assert len(seen) > 20


@pytest.mark.slow
def test_a_snapshot_never_mixes_two_versions(tmp_path: Path) -> None:
    # Each version pairs current i with previous i-1; a reader that resolved each
    # file separately could pair files from two different versions.
    SecretVolume(tmp_path).write({"api-key": "00001", "api-key-previous": "00000"})
    mixed: list[tuple[bytes | None, bytes | None]] = []
    currents: set[bytes] = set()

    def read() -> None:
        try:
            values = read_snapshot(str(tmp_path), ["api-key", "api-key-previous"]).values
        except SourceUnavailable as exc:
            # A writer that swaps back to back (no kubelet does) can outrun every retry of a
            # reader on a loaded machine: the reader then refuses, which is no mixed snapshot.
            assert "kept changing" in str(exc)
            return
        current, previous = values["api-key"], values["api-key-previous"]
        if current is None or previous is None or int(current) != int(previous) + 1:
            mixed.append((current, previous))
        else:
            currents.add(current)

    writer = _SPAWN.Process(target=_swap_pairs, args=(str(tmp_path),))
    writer.start()
    _read_while(writer, read)
    assert mixed == []
    assert len(currents) > 20


def _kubelet_like(tmp_path: Path, target: str) -> Path:
    mount = tmp_path / "mount"
    mount.mkdir()
    os.symlink(target, mount / "..data")
    os.symlink("..data/api-key", mount / "api-key")
    return mount


def test_an_absolute_data_link_is_not_followed_out_of_the_mount(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "api-key").write_text("not-from-the-mount")
    mount = _kubelet_like(tmp_path, str(outside))
    with pytest.raises(SourceUnavailable, match="outside the key folder"):
        MountedSecretSource(str(mount)).read()


def test_a_nested_data_link_is_not_followed(tmp_path: Path) -> None:
    mount = _kubelet_like(tmp_path, "../elsewhere")
    with pytest.raises(SourceUnavailable, match="outside the key folder"):
        MountedSecretSource(str(mount)).read()


def test_a_key_file_linked_out_of_a_plain_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret-elsewhere"
    secret.write_text("someone-elses")
    folder = tmp_path / "keys"
    folder.mkdir()
    os.symlink(secret, folder / "api-key")
    with pytest.raises(SourceUnavailable, match="link out of the key folder"):
        MountedSecretSource(str(folder)).read()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "api-key")
    result: list[BaseException | str] = []

    def read() -> None:
        try:
            result.append(MountedSecretSource(str(tmp_path)).read())
        except BaseException as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], SourceUnavailable) and "not a regular file" in str(result[0])


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    with open(tmp_path / "api-key", "wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: 300 MB long, no disk used
    with pytest.raises(SourceUnavailable, match="more than a key file holds"):
        MountedSecretSource(str(tmp_path)).read()
