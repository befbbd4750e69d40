"""The agent's disk spool: what it holds survives reopening (a restarted agent), it stays within its bound
by dropping the oldest (and counting them, across restarts too), and an acknowledged message leaves it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.spool import Spool


def test_messages_survive_reopening_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "outbox.sqlite")
    ids = [spool.add(f"t/{i}", bytes([i]) * 3, qos=1, retain=i == 2) for i in range(3)]
    spool.close()

    reopened = Spool(tmp_path / "outbox.sqlite")
    try:
        found = reopened.after(0, 10)
        assert [m.id for m in found] == ids and len(reopened) == 3
        assert [(m.topic, m.payload, m.qos, m.retain) for m in found] == [
            ("t/0", b"\x00" * 3, 1, False), ("t/1", b"\x01" * 3, 1, False), ("t/2", b"\x02" * 3, 1, True),
        ]  # fmt: skip
        assert [m.id for m in reopened.after(ids[0], 10)] == ids[1:]
        assert [m.id for m in reopened.after(0, 1)] == ids[:1]
    finally:
        reopened.close()


def test_removal_on_acknowledgement(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    try:
        first, second = spool.add("a", b"1"), spool.add("b", b"2")
        spool.remove(first)
        spool.remove(first)  # a second acknowledgement (or one for a dropped message) changes nothing
        assert first not in spool and second in spool and len(spool) == 1
        assert [m.topic for m in spool.after(0, 10)] == ["b"]
    finally:
        spool.close()


def test_bounded_drops_oldest_and_counts_across_restarts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    spool = Spool(path, max_messages=3)
    with caplog.at_level(logging.WARNING, logger="edge_agent.spool"):
        for i in range(5):
            spool.add("t", str(i).encode())
    assert len(spool) == 3 and spool.dropped == 2
    assert [m.payload for m in spool.after(0, 10)] == [b"2", b"3", b"4"]
    assert "full" in caplog.text and "dropped the oldest" in caplog.text
    spool.close()

    reopened = Spool(path, max_messages=3)
    try:
        reopened.add("t", b"5")
        assert reopened.dropped == 3 and len(reopened) == 3
        assert [m.payload for m in reopened.after(0, 10)] == [b"3", b"4", b"5"]
    finally:
        reopened.close()


def test_a_smaller_bound_on_reopening_trims_at_the_next_add(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = Spool(path, max_messages=10)
    for i in range(6):
        spool.add("t", bytes([i]))
    spool.close()
    smaller = Spool(path, max_messages=2)
    try:
        smaller.add("t", b"x")
        assert len(smaller) == 2 and smaller.dropped == 5
    finally:
        smaller.close()


def test_refuses_a_useless_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Spool(tmp_path / "s.sqlite", max_messages=0)


def test_what_was_added_survives_the_process_being_killed(tmp_path: Path) -> None:
    """SIGKILL right after add() returns: no close, no clean exit (what paho's in-memory queue cannot survive)."""
    import signal
    import subprocess
    import sys

    script = (
        "import sys\nfrom edge_agent.spool import Spool\n"
        f"spool = Spool({str(tmp_path / 'k.sqlite')!r})\n"
        "for i in range(25):\n    spool.add('t', str(i).encode())\n"
        "print('added', flush=True)\nsys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "added"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdin is not None:
            child.stdin.close()
        if child.stdout is not None:
            child.stdout.close()
    spool = Spool(tmp_path / "k.sqlite")
    try:
        assert [m.payload for m in spool.after(0, 100)] == [str(i).encode() for i in range(25)]
    finally:
        spool.close()
