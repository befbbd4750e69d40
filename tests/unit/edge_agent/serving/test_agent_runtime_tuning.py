"""A loaded onnxruntime model runs with the small-board settings: one thread, no spinning pool, no memory
arena or pattern planning (RuntimeTuning's defaults), read back from the live session."""

from __future__ import annotations

from support.releases import make_keys, onnx_release

from edge_agent.serving.runtime import RuntimeTuning, load_model


def test_a_loaded_onnx_model_has_one_thread_no_spinning_and_no_arena(tmp_path) -> None:  # type: ignore[no-untyped-def]
    release = onnx_release(make_keys(tmp_path).signer, "1", 1)
    artifact = release.manifest.artifacts[0]
    for tuning, expected in ((RuntimeTuning(), "0"), (RuntimeTuning.stock(), "1")):
        model = load_model(artifact, release.artifacts[artifact.sha256], release.manifest.io, tuning=tuning)
        options = model._session.get_session_options()  # type: ignore[attr-defined]
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
        assert options.enable_cpu_mem_arena is tuning.memory_arena
        assert options.enable_mem_pattern is tuning.memory_pattern
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
