"""The journal's JSON: every field of a full journal survives encode -> decode, the document has the same
fields and values as json.dumps of them (the models' JSON is spliced in, not re-encoded), and a journal
written before the models were spliced in still reads."""

from __future__ import annotations

import base64
import json

from edge_agent.update.journal import (
    InstalledModel,
    Journal,
    LastError,
    Outcome,
    PendingUpdate,
    Probation,
    Restoring,
    decode_journal,
    encode_journal,
)
from protocols.chunking import ChunkLayout


def _full() -> Journal:
    active, previous, target = (InstalledModel(bytes([n]) * 10_000 + b"\x00\xff", c * 64) for n, c in
                                ((1, "a"), (2, "b"), (3, "c")))  # fmt: skip
    pending = PendingUpdate(generation=9, deployment_id="dep-2", target=target,
                            layout=ChunkLayout("c" * 64, 100_000, 10_000, 10), load_attempts=1,
                            desired=b'\x01desired"state', fanout_failed=True)  # fmt: skip
    return Journal(active=active, previous=previous, desired_generation=8, root=b"root\x00", deployment_id="dep-1",
                   outcome=Outcome.FAILED, last_error=LastError("E_X", 'quote " and \\ backslash'), pending=pending,
                   boot_count=4, probation=Probation(123, 2), crashed_runtimes=frozenset({"tflite", "onnx"}),
                   crash_stamps={"onnx": "1.0/2.0"}, restoring=Restoring("a" * 64, 1),
                   verified_desired="8:x")  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_full_journal_round_trips() -> None:
    journal = _full()
    assert decode_journal(encode_journal(journal)) == journal
    assert decode_journal(encode_journal(Journal())) == Journal()


def test_the_document_holds_every_field_as_plain_json() -> None:
    journal = _full()
    doc = json.loads(encode_journal(journal))
    assert journal.active is not None and journal.pending is not None
    assert doc["active"] == {"signed_manifest": _b64(journal.active.signed_manifest), "artifact_sha256": "a" * 64}
    assert doc["pending"]["target"]["artifact_sha256"] == "c" * 64
    assert doc["pending"]["desired"] == _b64(b'\x01desired"state')
    assert doc["pending"]["layout"] == {"sha256": "c" * 64, "size_bytes": 100_000, "chunk_size": 10_000,
                                        "total_chunks": 10}  # fmt: skip
    assert doc["last_error"] == {"code": "E_X", "message": 'quote " and \\ backslash'}
    assert doc["crashed_runtimes"] == ["onnx", "tflite"]
    assert set(doc) == {"version", "active", "previous", "desired_generation", "root", "deployment_id", "outcome",
                        "last_error", "pending", "boot_count", "probation", "crashed_runtimes", "crash_stamps",
                        "verified_desired", "restoring"}  # fmt: skip


def test_a_journal_in_the_earlier_layout_still_reads() -> None:
    journal = _full()
    earlier = json.dumps(json.loads(encode_journal(journal)), sort_keys=True).encode()  # one json.dumps of it all
    assert decode_journal(earlier) == journal
    assert encode_journal(decode_journal(earlier)) == encode_journal(journal)  # the same bytes: not rewritten
