"""The evolution rules of protocols/EVOLUTION.md, checked on the generated code: a v1 reader accepts what
a later v1 writer sends (unknown fields and enum values), and a signed manifest keeps its exact bytes."""

from __future__ import annotations

from support.fleet_keys import NOW_MS, FleetKeys

from protocols.assignment import verify_desired
from protocols.v1 import messages_pb2 as pb


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unknown_fields() -> bytes:
    # field 900 as a varint (wire type 0) and field 901 as bytes (wire type 2): what a newer writer might add
    return _varint(900 << 3 | 0) + _varint(42) + _varint(901 << 3 | 2) + _varint(3) + b"new"


def test_a_reader_ignores_fields_a_newer_writer_added() -> None:
    window = pb.TelemetryWindow(schema_version=2, device_id="pi-01", seq=7, inference_count=10)
    parsed = pb.TelemetryWindow.FromString(window.SerializeToString() + _unknown_fields())
    assert (parsed.device_id, parsed.seq, parsed.inference_count) == ("pi-01", 7, 10)
    assert parsed.schema_version == 2  # a higher schema version is read, not refused


def test_an_unknown_enum_value_reads_as_a_number_not_an_error() -> None:
    event = pb.LifecycleEvent(device_id="pi-01", kind=pb.EVENT_KIND_ACTIVATED)
    wire = bytearray(event.SerializeToString())
    kind_tag = bytes([5 << 3 | 0])
    at = wire.index(kind_tag + bytes([pb.EVENT_KIND_ACTIVATED]))
    wire[at + 1] = 99  # a kind this reader does not know
    parsed = pb.LifecycleEvent.FromString(bytes(wire))
    assert parsed.kind == 99 and parsed.device_id == "pi-01"
    assert pb.EventKind.Name(pb.EVENT_KIND_UNSPECIFIED) == "EVENT_KIND_UNSPECIFIED"


def test_unknown_fields_survive_a_round_trip_so_signatures_hold() -> None:
    # A relay that parses and re-serializes a manifest must not drop what it does not understand.
    manifest_bytes = pb.Manifest(model_id="m", sequence=3).SerializeToString() + _unknown_fields()
    again = pb.Manifest.FromString(manifest_bytes).SerializeToString()
    assert again == manifest_bytes


def test_every_top_level_payload_starts_with_schema_version() -> None:
    for message in (pb.TelemetryWindow, pb.SampleBatch, pb.LifecycleEvent, pb.DesiredState, pb.ReportedState,
                    pb.Presence, pb.ArtifactChunkRequest, pb.ArtifactChunk, pb.SignedManifest):
        field = message.DESCRIPTOR.fields_by_number[1]
        assert field.name == "schema_version", message.DESCRIPTOR.name


def test_deprecated_manifest_delegations_stay_on_the_wire_unwritten_and_ignored() -> None:
    field = pb.SignedManifest.DESCRIPTOR.fields_by_name["delegations"]
    assert field.number == 5 and field.GetOptions().deprecated  # kept (never removed), marked deprecated
    keys = FleetKeys()
    signed = keys.manifest("m", 2)
    assert not signed.delegations  # nothing writes it any more
    # what an older cloud attached: a device ignores it and verifies through its root metadata alone
    signed.delegations.add(delegation=b"old", root_key_id="0" * 16, root_signature=bytes(64))
    desired = pb.DesiredState.FromString(keys.desired("pi-01", 1, signed).SerializeToString())
    verified = verify_desired(desired, keys.pinned(), device_id="pi-01", last_counter=0, now_ms=NOW_MS)
    assert verified.manifest is not None and verified.manifest.sequence == 2


def test_a_window_and_a_report_of_an_agent_before_probation_read_as_no_shadowing_and_no_probation() -> None:
    old_window = pb.TelemetryWindow(schema_version=1, device_id="pi-01", seq=1, inference_count=10)
    window = pb.TelemetryWindow.FromString(old_window.SerializeToString())
    assert (window.shadow_compared, window.shadow_agreed, window.shadow_dropped) == (0, 0, 0)
    old_state = pb.ReportedState(schema_version=1, device_id="pi-01", update_state=pb.UPDATE_STATE_ACTIVE)
    assert pb.ReportedState.FromString(old_state.SerializeToString()).probation_until_ms == 0
    numbers = {f.name: f.number for f in pb.TelemetryWindow.DESCRIPTOR.fields}
    assert (numbers["shadow_compared"], numbers["shadow_agreed"], numbers["shadow_dropped"]) == (18, 19, 20)


def test_an_artifact_location_of_an_older_cloud_reads_as_no_fanout() -> None:
    old = pb.ArtifactLocation(sha256="ab" * 32, size_bytes=10, chunk_size=4, total_chunks=3)
    assert pb.ArtifactLocation.FromString(old.SerializeToString()).fanout_filter == ""  # per-device requests only


def test_a_report_of_an_agent_before_capabilities_names_none_so_it_gets_whole_desired_states() -> None:
    old = pb.ReportedState(schema_version=1, device_id="pi-1", agent_version="0.0.9", runtimes=["onnxruntime"])
    assert list(pb.ReportedState.FromString(old.SerializeToString()).capabilities) == []
    new = pb.ReportedState(schema_version=1, device_id="pi-1", capabilities=["manifest_by_digest"])
    assert pb.ReportedState.FromString(new.SerializeToString()).device_id == "pi-1"  # an old cloud reads on


def test_named_columns_are_additive_fields() -> None:
    """io.columns, FeatureProfile.categories and PredictRequest.columns are new field numbers: a manifest
    or request written before them parses as before (no columns), and one written with them keeps its
    old fields for an old reader."""
    from protocols.v1 import agent_pb2

    old = pb.IoSchema(n_features=3, accepts_missing=True, feature_names=["a", "b", "c"])
    parsed = pb.IoSchema.FromString(old.SerializeToString())
    assert list(parsed.columns) == [] and parsed.n_features == 3
    new = pb.IoSchema(n_features=1, columns=[pb.ColumnSpec(name="city", dtype="string", categories=["nice"])])
    assert pb.IoSchema.DESCRIPTOR.fields_by_name["columns"].number == 8
    assert pb.FeatureProfile.DESCRIPTOR.fields_by_name["categories"].number == 5
    assert agent_pb2.PredictRequest.DESCRIPTOR.fields_by_name["columns"].number == 4
    assert pb.IoSchema.FromString(new.SerializeToString()).columns[0].categories == ["nice"]
    request = agent_pb2.PredictRequest(values=[1.0, 2.0], rows=1)
    assert agent_pb2.PredictRequest.FromString(request.SerializeToString()).columns == []
    assert pb.Task.Name(3) == "TASK_MULTILABEL"  # new value; an older agent reads it as a plain number


def test_per_label_rates_are_additive_fields() -> None:
    """ReferenceProfile.label_rates (5) and TelemetryWindow.label_counts (35): a profile or window written
    before them reads as no label rates; one written with them keeps its old fields for an old reader."""
    assert pb.ReferenceProfile.DESCRIPTOR.fields_by_name["label_rates"].number == 5
    assert pb.TelemetryWindow.DESCRIPTOR.fields_by_name["label_counts"].number == 35
    old = pb.ReferenceProfile(n_rows=10, predictions=pb.PredictionProfile(labels=["a"], counts=[4]))
    parsed = pb.ReferenceProfile.FromString(old.SerializeToString())
    assert not parsed.HasField("label_rates") and list(parsed.label_rates.labels) == []
    window = pb.TelemetryWindow(schema_version=1, device_id="pi-01", seq=1, inference_count=5)
    assert list(pb.TelemetryWindow.FromString(window.SerializeToString()).label_counts) == []
    window.label_counts.extend([5, 2, 0])
    new = pb.TelemetryWindow.FromString(window.SerializeToString())
    assert (new.inference_count, list(new.label_counts)) == (5, [5, 2, 0])


def test_an_event_batch_is_its_first_event_to_an_older_reader_and_an_older_clouds_desired_state_names_none() -> None:
    first = pb.LifecycleEvent(schema_version=1, device_id="pi-01", seq=4, ts_ms=5, kind=pb.EVENT_KIND_VERIFIED)
    batch = pb.LifecycleEvent()
    batch.CopyFrom(first)
    batch.batch.add(seq=5, ts_ms=6, kind=pb.EVENT_KIND_ACTIVATED)
    # field 9 follows the first event's fields: a reader without it skips it (unknown, as above)
    assert batch.SerializeToString().startswith(first.SerializeToString())
    tag = batch.SerializeToString()[len(first.SerializeToString())]
    assert tag == 9 << 3 | 2
    assert pb.DesiredState(schema_version=1, device_id="pi-01").cloud_capabilities == []
