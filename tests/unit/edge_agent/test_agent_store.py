"""The model store contract, run against every adapter (disk and memory), plus the disk layout's
crash safety."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.errors import StoreError
from edge_agent.store import DiskModelStore, MemoryModelStore, ModelStore
from edge_agent.update.journal import ChunkLayout, InstalledModel, Journal, LastError, Outcome, PendingUpdate

DATA = bytes(range(256)) * 3
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(params=["disk", "disk-unsynced", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelStore]:
    # disk-unsynced: the simulator's (no fsync, the journal overwritten in place); a shorter journal saved
    # after a longer one must not keep the longer one's tail
    if request.param == "memory":
        yield MemoryModelStore()
    else:
        yield DiskModelStore(tmp_path / "state", sync=request.param == "disk")


def _journal() -> Journal:
    model = InstalledModel(b"\x0a\x01x", SHA)
    return Journal(
        active=model,
        previous=None,
        root=b"\x0a\x02ab",
        desired_generation=4,
        deployment_id="dep",
        outcome=Outcome.FAILED,
        last_error=LastError("rollback", "too old"),
        pending=PendingUpdate(5, "dep-5", model, ChunkLayout(SHA, len(DATA), 100, 8)),
        boot_count=9,
    )


def test_a_journal_is_saved_and_loaded(store: ModelStore) -> None:
    assert store.load_journal() is None
    store.save_journal(_journal())
    assert store.load_journal() == _journal()
    store.save_journal(Journal())
    assert store.load_journal() == Journal()


def test_chunks_written_out_of_order_make_the_artifact(store: ModelStore) -> None:
    store.begin_download(SHA, len(DATA))
    for index in (3, 0, 2, 1):
        store.write_chunk(SHA, index, index * 200, DATA[index * 200 : (index + 1) * 200])
    assert store.received_chunks(SHA) == {0, 1, 2, 3}
    assert store.read_download(SHA) == DATA
    assert not store.has_model(SHA)
    with pytest.raises(StoreError):
        store.read_model(SHA)
    store.commit_download(SHA)
    assert store.has_model(SHA) and store.read_model(SHA) == DATA
    assert store.received_chunks(SHA) == set()
    with pytest.raises(StoreError):
        store.read_download(SHA)


def test_begin_download_forgets_an_earlier_attempt(store: ModelStore) -> None:
    store.begin_download(SHA, len(DATA))
    store.write_chunk(SHA, 0, 0, DATA[:200])
    store.begin_download(SHA, len(DATA))
    assert store.received_chunks(SHA) == set()


def test_discard_and_prune(store: ModelStore) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    for sha, data in ((SHA, DATA), (other, b"other")):
        store.begin_download(sha, len(data))
        store.write_chunk(sha, 0, 0, data)
        store.commit_download(sha)
    store.begin_download(SHA, len(DATA))
    store.discard_download(SHA)
    assert store.received_chunks(SHA) == set()
    store.prune_models({other})
    assert not store.has_model(SHA) and store.has_model(other)


def test_misuse_is_a_store_error(store: ModelStore) -> None:
    with pytest.raises(StoreError):
        store.write_chunk(SHA, 0, 0, b"x")  # no download begun
    with pytest.raises(StoreError):
        store.commit_download(SHA)
    with pytest.raises(StoreError):
        store.begin_download("../../etc/passwd", 1)


def test_a_half_written_chunk_record_is_ignored(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    store.begin_download(SHA, len(DATA))
    store.write_chunk(SHA, 0, 0, DATA[:100])
    with open(tmp_path / "downloads" / f"{SHA}.chunks", "ab") as log:
        log.write(b"1")  # power cut before the newline
    assert store.received_chunks(SHA) == {0}


def test_a_corrupt_journal_is_a_clear_store_error(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    store.save_journal(_journal())
    (tmp_path / "journal.json").write_bytes(b'{"version": 1, "active": ')
    with pytest.raises(StoreError, match="journal"):
        store.load_journal()
    (tmp_path / "journal.json").write_bytes(b'{"version": 99}')
    with pytest.raises(StoreError, match="version"):
        store.load_journal()


def test_the_journal_is_replaced_atomically(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    store.save_journal(_journal())
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "journal.json").stat().st_mode & 0o777 == 0o600


def test_an_unchanged_journal_is_not_written_again_yet_every_change_survives_a_restart(tmp_path: Path) -> None:
    # synced: every write is a new file renamed over the old one, so the inode tells whether one happened
    store = DiskModelStore(tmp_path)
    journal = _journal()
    store.save_journal(journal)
    written = (tmp_path / "journal.json").stat().st_ino
    store.save_journal(journal.with_())  # equal, not the same object
    assert (tmp_path / "journal.json").stat().st_ino == written
    assert DiskModelStore(tmp_path).load_journal() == journal
    changed = journal.with_(boot_count=journal.boot_count + 1)
    store.save_journal(changed)
    assert (tmp_path / "journal.json").stat().st_ino != written
    assert DiskModelStore(tmp_path).load_journal() == changed
    store.save_journal(journal)  # back to what was saved before: not what the file holds now, so written
    assert DiskModelStore(tmp_path).load_journal() == journal
    restarted = DiskModelStore(tmp_path)  # a new store knows nothing of the file: its first save writes
    restarted.save_journal(journal)
    assert not list(tmp_path.glob("*.tmp"))
    assert restarted.load_journal() == journal
