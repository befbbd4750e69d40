"""InstalledModel: the manifest parsed once per instance, and the cache invisible to what compares,
hashes, copies or saves the model."""

from __future__ import annotations

from dataclasses import replace

from edge_agent.update.journal import InstalledModel, Journal, decode_journal, encode_journal
from protocols.v1 import messages_pb2 as pb


def _model() -> InstalledModel:
    manifest = pb.Manifest(
        model_id="m", version="2", sequence=7, artifacts=[pb.Artifact(sha256="a" * 64, runtime="onnx")]
    )
    signed = pb.SignedManifest(manifest=manifest.SerializeToString(), key_id="k", signature=b"s")
    return InstalledModel(signed.SerializeToString(), "a" * 64)


def test_the_manifest_is_parsed_once_per_installed_model() -> None:
    model = _model()
    first = model.manifest()
    assert model.manifest() is first  # the old code parsed the signed bytes again on every call
    assert first.model_id == "m" and model.artifact().runtime == "onnx"
    assert model.ref().sequence == 7


def test_the_parsed_manifest_is_no_part_of_equality_hash_replace_or_the_journal() -> None:
    model, twin = _model(), _model()
    model.manifest()
    assert model == twin and hash(model) == hash(twin)
    assert replace(model).manifest() == model.manifest()
    journal = Journal(active=model)
    assert encode_journal(journal) == encode_journal(Journal(active=twin))
    assert decode_journal(encode_journal(journal)) == journal
