"""The retraining loop one command at a time, on the database as cron or Airflow would run it: train,
snapshot, check, retrain (or its steps: train, compile, evaluate, register, each in a process of its own),
rollout, promote, aliases; with the exit codes an orchestrator branches on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.enrollment import enroll

import cloud
from cloud import registry
from cloud.cli import main
from cloud.db import make_engine
from cloud.db.tables import Candidate, Device, ModelVersion, PipelineRun, RunInput, SampleRecord
from cloud.monitoring import feedback
from cloud.registry import aliases
from cloud.rollout.records import Rollout
from cloud.settings import CloudSettings
from cloud.training.pipeline import load_dataset
from simulator.data import DataStream, Drift


def _drifted_field_data(engine: Engine, n: int = 240, shift: float = 3.0) -> None:
    split = load_dataset("digits", test_size=0.3, seed=0)  # the split `train` used
    features = tuple(int(i) for i in np.argsort(-split.X_train.std(axis=0))[:6])
    X, y = DataStream(split.X_test, split.y_test, seed=5, drift=Drift(features, shift=shift)).batch(n)
    enroll(engine, "d1")
    with Session(engine) as session:
        device = session.get(Device, "d1")
        assert device is not None
        device.active_model_id, device.active_version = "digits-classifier", "1"  # as its report would say
        session.add(device)
        session.add_all(SampleRecord(device_id="d1", batch_seq=1, position=i, model_id="digits-classifier",
                                     model_version="1", input=X[i].tolist(), prediction="?", ts_ms=1_000 + i,
                                     prediction_id=str(i)) for i in range(n))  # fmt: skip
        session.commit()
        feedback.record(session, [feedback.Label("d1", str(i), str(y[i])) for i in range(n)])
        session.commit()


def test_the_loop_step_by_step_on_the_database(data_dir: Path, db_engine: Engine, capsys) -> None:
    where = ["--data-dir", str(data_dir)]
    assert main(["train", *where]) == 0
    assert main(["data", "snapshot", "digits-classifier", *where]) == 1
    refused = capsys.readouterr()  # an error is one line on stderr, nothing on stdout
    assert "nothing to snapshot" in refused.err and refused.err.count("\n") == 1 and refused.err.startswith("error:")
    assert main(["pipeline", "check", "digits-classifier", *where]) == 3  # no data, no schedule: nothing to do
    capsys.readouterr()

    _drifted_field_data(db_engine)
    assert main(["data", "snapshot", "digits-classifier", "--device", "d1", *where]) == 0
    snapshot = capsys.readouterr().out
    assert "(240 rows, 64 features)" in snapshot and '"d1"' in snapshot
    # sampled predictions "?" against their labels: field accuracy 0, far below the evaluation's 0.97
    assert main(["pipeline", "check", "digits-classifier", *where]) == 0
    assert capsys.readouterr().out.startswith("accuracy: field accuracy")

    assert main(["pipeline", "retrain", "digits-classifier", "--trigger", "accuracy", "--actor", "ana", *where]) == 0
    out = capsys.readouterr().out
    assert "champion v1 -> WIN, challenger v2" in out and "next: edgefleet pipeline rollout digits-classifier 2" in out
    digest = next(line.split()[1] for line in snapshot.splitlines() if line.startswith("dataset "))
    # judged again on the snapshot, before approval: it still wins against v1; v1 against itself does not
    assert main(["pipeline", "evaluate", "digits-classifier", "2", "--dataset", digest, *where]) == 0
    assert "v2 against champion v1" in capsys.readouterr().out
    assert main(["pipeline", "evaluate", "digits-classifier", "1", "--dataset", digest, *where]) == 3
    assert "LOSE" in capsys.readouterr().out
    assert main(["pipeline", "rollout", "digits-classifier", "2", *where]) == 0
    assert "waves of [1] device(s)" in capsys.readouterr().out
    with Session(db_engine) as session:
        rollout = session.exec(select(Rollout)).one()
        assert rollout.waves == [["d1"]] and rollout.gates["max_prediction_psi"] == 10.0
    assert main(["pipeline", "rollout", "digits-classifier", "9", *where]) == 1  # an unknown version
    assert capsys.readouterr().err == "error: no digits-classifier version 9\n"

    assert main(["pipeline", "promote", "digits-classifier", "2", "--reason", "canary passed", *where]) == 0
    assert main(["pipeline", "aliases", "digits-classifier", *where]) == 0
    shown = capsys.readouterr().out
    assert "champion    v2" in shown and "production  v2" in shown and "challenger  v2" in shown
    assert "ana: accuracy" in shown and "canary passed" in shown and all(len(line) <= 80 for line in shown.splitlines())
    assert main(["pipeline", "aliases", "digits-classifier", "--json", *where]) == 0
    aliases = json.loads(capsys.readouterr().out)
    assert aliases["aliases"] == {"challenger": "2", "champion": "2", "production": "2"}
    assert {m["alias"] for m in aliases["history"] if m["reason"] == "canary passed"} == {"champion", "production"}
    assert main(["pipeline", "aliases", "no-such-model", *where]) == 1
    assert capsys.readouterr().err == "error: no model no-such-model\n"
    assert main(["data", "list", *where]) == 0
    listing = capsys.readouterr().out
    # the CLI's snapshot and the retrain's own hold the same rows: one dataset version, plus its two parts
    assert listing.count(" field ") == 3 and "bundled" in listing
    assert all(len(line) <= 80 for line in listing.splitlines())
    assert main(["data", "list", "--json", *where]) == 0
    datasets = json.loads(capsys.readouterr().out)
    assert len(datasets) == 4 and {len(d["content_hash"]) for d in datasets} == {64} and datasets[0]["provenance"]


def _step(*args: str) -> subprocess.CompletedProcess[str]:
    """One pipeline step in a fresh process, as an orchestrator's pod runs it."""
    env = {**os.environ, "PYTHONPATH": str(Path(cloud.__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "cloud.cli", "pipeline", *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_the_steps_in_separate_processes_hand_on_a_candidate_that_must_be_intact(
    data_dir: Path, db_engine: Engine, capsys
) -> None:
    where = ["--data-dir", str(data_dir)]
    assert main(["train", *where]) == 0
    _drifted_field_data(db_engine)
    capsys.readouterr()

    trained = _step("train", "digits-classifier", "--trigger", "drift", "--actor", "cron", "--json", *where)
    assert trained.returncode == 0, trained.stderr
    made = json.loads(trained.stdout)
    candidate = made["candidate"]
    assert made["new"] and made["champion"] == "1" and len(candidate) == 64
    with Session(db_engine) as session:  # the run names what it read
        roles = {r.role for r in session.exec(select(RunInput).where(RunInput.run_id == made["run_id"]))}
        assert roles == {"reference", "field", "field_train", "field_eval"}
        assert session.get(PipelineRun, made["run_id"]).status == "succeeded"  # type: ignore[union-attr]
    assert main(["pipeline", "train", "digits-classifier", "--json", *where]) == 0  # the same inputs: the same one
    again = json.loads(capsys.readouterr().out)
    assert again["candidate"] == candidate and not again["new"]

    # a candidate changed or lost in the store, or never made, is refused with one line, and nothing is compiled
    store = CloudSettings(data_dir=data_dir).artifacts_dir
    assert store is not None
    document = store / candidate[:2] / candidate
    estimator = store / json.loads(document.read_bytes())["estimator_sha256"][:2]
    estimator = estimator / json.loads(document.read_bytes())["estimator_sha256"]
    original = estimator.read_bytes()
    estimator.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert main(["pipeline", "compile", candidate, *where]) == 1
    assert "no longer matches its digest" in capsys.readouterr().err
    estimator.write_bytes(original)
    kept = document.read_bytes()
    document.unlink()
    assert main(["pipeline", "evaluate", candidate, *where]) == 1
    assert capsys.readouterr().err == f"error: no artifact {candidate}\n"
    document.write_bytes(kept)
    assert main(["pipeline", "register", "0" * 64, *where]) == 1
    assert capsys.readouterr().err.startswith(f"error: no candidate {'0' * 64}")
    assert main(["pipeline", "compile", candidate[:11] + "%", *where]) == 1  # not a pattern to match with
    assert "not a candidate id" in capsys.readouterr().err
    with Session(db_engine) as session:
        assert session.get(Candidate, candidate).artifacts == {}  # type: ignore[union-attr]

    compiled = _step("compile", candidate, "--json", *where)
    assert compiled.returncode == 0, compiled.stderr
    assert "manifest" in json.loads(compiled.stdout)["artifacts"]
    with Session(db_engine) as session:  # the refused try marked the run failed; the good one marks it succeeded
        assert session.get(PipelineRun, made["run_id"]).status == "succeeded"  # type: ignore[union-attr]
    judged = _step("evaluate", candidate, "--json", *where)
    assert judged.returncode == 0, judged.stderr
    verdict = json.loads(judged.stdout)
    assert verdict["outcome"] == "win" and verdict["field"]["gain_interval"][0] > 0.02
    registered = _step("register", candidate, "--actor", "argo", "--json", *where)
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout) == {"candidate": candidate, "model_id": "digits-classifier", "version": "2"}
    assert main(["pipeline", "register", candidate[:16], *where]) == 0  # again (by a prefix): the same version
    assert "digits-classifier v2 registered" in capsys.readouterr().out
    with Session(db_engine) as session:
        assert len(session.exec(select(ModelVersion)).all()) == 2
        lineage = registry.manifest_of(registry.get_model_version(session, "digits-classifier", "2")).lineage
        assert lineage["candidate"] == candidate and lineage["run_id"] == made["run_id"]
        moves = aliases.history(session, "digits-classifier")
        assert [(m.alias, m.to_version, m.actor) for m in moves][-1] == ("challenger", "2", "argo")
        run = session.get(PipelineRun, made["run_id"])
        assert run is not None and set(run.step_timings_s) == {"snapshot", "train", "compile", "evaluate",
                                                               "sign and register"}

    # a margin no challenger can beat: a new candidate, which loses; nothing to register (exit 3)
    assert main(["pipeline", "train", "digits-classifier", "--margin", "0.95", "--json", *where]) == 0
    hopeless = json.loads(capsys.readouterr().out)["candidate"]
    assert main(["pipeline", "evaluate", hopeless, *where]) == 3
    out = capsys.readouterr().out
    assert "LOSE" in out and "judged by margin +0.950, max reference loss 0.030, 30 field rows: as its train step " \
        "recorded them" in out, out
    # judged again with a margin given here: the same comparisons win, and it says which margin it used
    assert main(["pipeline", "evaluate", hopeless, "--margin", "0.02", *where]) == 0
    out = capsys.readouterr().out
    assert "WIN" in out and "judged by margin +0.020, max reference loss 0.030, 30 field rows: as given here" in out
    assert main(["pipeline", "evaluate", hopeless[:12], "--margin", "0.02", "--json", *where]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["outcome"] == "win" and given["policy"] == {"margin": 0.02, "max_reference_loss": 0.03,
                                                             "min_field_rows": 30, "min_reference_rows": 30,
                                                             "source": "given"}  # fmt: skip
    assert main(["pipeline", "evaluate", hopeless, "--margin", "2", *where]) == 1  # a margin no gain can reach
    assert capsys.readouterr().err.startswith("error: margin must be in (-1, 1)")
    # register acts on the verdict recorded at train time, not on one judged with another margin
    assert main(["pipeline", "register", hopeless, *where]) == 3
    assert "did not win: nothing to register" in capsys.readouterr().out


def test_train_run_twice_at_once_gives_both_the_same_candidate(data_dir: Path, database_url: str) -> None:
    """Two orchestrators (or a retry while the first still runs) start `pipeline train` on the same inputs:
    both train (the run is named by its inputs), neither fails on the other's rows, both print one candidate."""
    where = ["--data-dir", str(data_dir), "--database-url", database_url]
    env = {**os.environ, "PYTHONPATH": str(Path(cloud.__file__).resolve().parent.parent)}
    champion = subprocess.run([sys.executable, "-m", "cloud.cli", "train", *where], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip
    assert champion.returncode == 0, champion.stderr
    engine = make_engine(database_url)
    try:
        _drifted_field_data(engine)
        command = [sys.executable, "-m", "cloud.cli", "pipeline", "train", "digits-classifier", "--json", *where]
        both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(2)]  # fmt: skip
        outs = [p.communicate(timeout=300) for p in both]
        assert [p.returncode for p in both] == [0, 0], outs
        made = [json.loads(out) for out, _ in outs]
        assert made[0]["candidate"] == made[1]["candidate"] and made[0]["run_id"] == made[1]["run_id"], made
        assert sum(m["new"] for m in made) <= 1
        with Session(engine) as session:
            assert len(session.exec(select(Candidate)).all()) == 1
            run = session.get(PipelineRun, made[0]["run_id"])
            assert run is not None and run.status == "succeeded" and run.error is None
    finally:
        engine.dispose()


def test_field_rows_that_are_held_out_reference_rows_are_left_out_of_the_fit(data_dir: Path, db_engine: Engine,
                                                                              capsys) -> None:  # fmt: skip
    """A field that sends back the reference's own held-out rows (as the demo's devices once did): a challenger
    fitted on them would be judged on rows it learnt; they stay out of its fit, and the run says how many."""
    where = ["--data-dir", str(data_dir)]
    assert main(["train", *where]) == 0
    _drifted_field_data(db_engine, shift=0.0)  # undrifted draws from the held-out rows
    capsys.readouterr()
    assert main(["pipeline", "train", "digits-classifier", "--json", *where]) == 0
    made = json.loads(capsys.readouterr().out)
    with Session(db_engine) as session:
        metrics = session.get(PipelineRun, made["run_id"]).metrics  # type: ignore[union-attr]
    store = CloudSettings(data_dir=data_dir).artifacts_dir
    assert store is not None
    fitted = json.loads((store / made["candidate"][:2] / made["candidate"]).read_bytes())["fitted_rows"]
    assert metrics["field_rows_train"] > 50 and metrics["held_out_rows_left_out"] == metrics["field_rows_train"]
    assert fitted["field"] == 0 and fitted["reference"] == 1257
