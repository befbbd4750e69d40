"""`edgefleet data snapshot|list`, `edgefleet pipeline check|snapshot|train|compile|evaluate|register|retrain|
rollout|promote|aliases`: the retraining loop one step per command, against the same data dir and database
as `up`, so cron, Airflow or Argo can drive it, each step in a fresh process (a pod of its own):

    edgefleet pipeline check M && C=$(edgefleet pipeline train M --trigger drift --json | jq -r .candidate) \\
        && edgefleet pipeline compile $C && edgefleet pipeline evaluate $C && edgefleet pipeline register $C
    edgefleet pipeline rollout M <challenger>     # a running cloud's controller opens the waves

`retrain` is train, compile, evaluate and register in one process. Each step is idempotent: run again on the
same inputs it prints what it made the first time. Exit codes: 0 done (a trigger fired, a candidate was
trained, compiled or registered, a challenger won), 3 nothing to do (no trigger, a candidate that did not win
or that the compiler's accuracy gate refused: nothing to register), 1 error (a candidate unknown, missing from
the store or changed in it, too little data, a bad argument). `--json` prints one JSON object on stdout
instead of lines.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cloud.cli.tables import Column, print_rows

NOTHING_TO_DO = 3


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="the same data dir as `edgefleet up` (default .edgefleet)")
    parser.add_argument("--database-url", help="the same database as `edgefleet up`")


def _selection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_id")
    parser.add_argument("--version", action="append", default=[], help="only samples of this version (repeatable)")
    parser.add_argument("--device", action="append", default=[], help="only samples from this device (repeatable)")
    parser.add_argument("--since-ms", type=int, help="only samples at or after this time (epoch ms)")
    parser.add_argument("--until-ms", type=int, help="only samples before this time (epoch ms)")
    _store_args(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="versioned datasets from the fleet's labelled samples")
    data_actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    snap = data_actions.add_parser("snapshot", help="labelled samples -> a content-addressed dataset version")
    _selection_args(snap)
    snap.set_defaults(func=_snapshot)
    listing = data_actions.add_parser("list", help="dataset versions, newest first, with their provenance")
    _store_args(listing)
    listing.add_argument("--json", action="store_true", help="every dataset version with its provenance, as JSON")
    listing.set_defaults(func=_list)

    pipeline = subparsers.add_parser("pipeline", help="champion/challenger retraining, one step per command")
    steps = pipeline.add_subparsers(dest="pipeline_command", metavar="STEP", required=True)
    check = steps.add_parser("check", help="does a trigger fire now (drift, accuracy drop, schedule)? exit 0 if so")
    check.add_argument("model_id")
    check.add_argument("--every-s", type=float, help="also fire when the last retrain is older than this")
    check.add_argument("--max-accuracy-drop", type=float, default=0.05)
    check.add_argument("--since-ms", type=int, help="judge only data at or after this time (epoch ms)")
    _store_args(check)
    check.set_defaults(func=_check)
    psnap = steps.add_parser("snapshot", help="the same as `edgefleet data snapshot`")
    _selection_args(psnap)
    psnap.set_defaults(func=_snapshot)
    train = steps.add_parser("train", help="train a challenger candidate with the champion's recipe; prints its id")
    train.add_argument("model_id")
    _training_args(train)
    _json_arg(train)
    _store_args(train)
    train.set_defaults(func=_train)
    compiled = steps.add_parser("compile", help="compile a candidate as the devices will run it")
    compiled.add_argument("candidate", help="a candidate id (from `pipeline train`; 12 or more leading digits do)")
    _json_arg(compiled)
    _store_args(compiled)
    compiled.set_defaults(func=_compile)
    registered = steps.add_parser("register", help="sign and register a candidate that won; alias it challenger")
    registered.add_argument("candidate", help="a candidate id (from `pipeline train`)")
    registered.add_argument("--actor", default=getpass.getuser(), help="who (default: this user)")
    _json_arg(registered)
    _store_args(registered)
    registered.set_defaults(func=_register)
    retrain = steps.add_parser("retrain", help="train a challenger, judge it against the champion, register a winner")
    retrain.add_argument("model_id")
    _training_args(retrain)
    _store_args(retrain)
    retrain.set_defaults(func=_retrain)
    evaluate = steps.add_parser("evaluate", help="judge a candidate against the champion (CANDIDATE), or a registered "
                                                 "challenger again on a field dataset version (MODEL VERSION "
                                                 "--dataset D); registers nothing")
    evaluate.add_argument("model_id", metavar="CANDIDATE|MODEL", help="a candidate id, or a model id")
    evaluate.add_argument("challenger", nargs="?", metavar="VERSION", help="the registered version to judge")
    evaluate.add_argument("--dataset", help="a field dataset version (from `data snapshot`), with VERSION")
    evaluate.add_argument("--champion", help="judge against this version (default: the champion alias)")
    evaluate.add_argument("--margin", type=float, help="the field gain's 95 %% low bound must beat this (default: a "
                                                        "candidate's as its train step recorded it; 0.02)")
    evaluate.add_argument("--max-reference-loss", type=float, help="(default: as recorded; 0.03)")
    evaluate.add_argument("--min-field-rows", type=int, help="(default: as recorded; 30)")
    _json_arg(evaluate)
    _store_args(evaluate)
    evaluate.set_defaults(func=_evaluate)
    rollout = steps.add_parser("rollout", help="hand a challenger to a gated canary (a running cloud's controller "
                                               "opens its waves)")
    rollout.add_argument("model_id")
    rollout.add_argument("version")
    rollout.add_argument("--devices", default="", help="comma-separated targets (default: the devices running it)")
    rollout.add_argument("--canary", type=float, default=1, help="first wave: a count, or a share < 1")
    rollout.add_argument("--dwell-s", type=float, default=300.0, help="watch a passed wave this long")
    rollout.add_argument("--min-inferences", type=int, default=200)
    _store_args(rollout)
    rollout.set_defaults(func=_rollout)
    promote = steps.add_parser("promote", help="point champion and production at a version (after its canary)")
    promote.add_argument("model_id")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)
    promote.add_argument("--actor", default=getpass.getuser())
    _store_args(promote)
    promote.set_defaults(func=_promote)
    shown = steps.add_parser("aliases", help="where champion, challenger and production point, and every move")
    shown.add_argument("model_id")
    shown.add_argument("--json", action="store_true", help="the aliases and their history as JSON")
    _store_args(shown)
    shown.set_defaults(func=_aliases)


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of lines")


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(settings, engine, store) of the data dir and database `up` uses."""
    from cloud.db import create_tables, make_engine
    from cloud.registry import LocalArtifactStore
    from cloud.settings import CloudSettings

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    assert settings.artifacts_dir is not None
    engine = make_engine(settings.database)
    create_tables(engine)
    return settings, engine, LocalArtifactStore(settings.artifacts_dir)


def _guarded(run: Any, args: argparse.Namespace) -> int:
    from cloud.errors import CloudError
    from model_compiler import CompileError

    try:
        return int(run(args))
    except (CloudError, CompileError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def _snapshot(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.registry import field_data

        _, engine, store = _open(args)
        selection = field_data.Selection(args.model_id, tuple(args.version), tuple(args.device), args.since_ms,
                                         args.until_ms)  # fmt: skip
        with session_scope(engine) as session:
            dataset = field_data.snapshot(session, store, selection)
            print(f"dataset {dataset.content_hash} ({dataset.n_rows} rows, {dataset.n_features} features)")
            print(json.dumps(dataset.provenance, indent=2, sort_keys=True))
        return 0

    return _guarded(run, args)


def _list(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud import registry
        from cloud.db import session_scope

        _, engine, _ = _open(args)
        with session_scope(engine) as session:
            rows = [d.model_dump() for d in registry.list_datasets(session)]
        print_rows(rows, DATASET_COLUMNS, as_json=args.json)
        return 0

    return _guarded(run, args)


def _origin(dataset: dict[str, Any]) -> str:
    provenance = dataset["provenance"] or {}
    if provenance.get("split_of"):
        return f"part {provenance.get('part')} of {str(provenance['split_of'])[:12]}"
    devices = provenance.get("devices") or []
    return f"{len(devices)} device(s)" if devices else "-"


DATASET_COLUMNS = [
    Column("dataset", lambda d: d["content_hash"][:16], key=True),  # --json: the whole sha256
    Column("kind", lambda d: d["kind"], key=True),
    Column("rows", lambda d: d["n_rows"]),
    Column("name", lambda d: d["name"]),
    Column("from", _origin),
]


def _check(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.training import watch
        from cloud.training.triggers import TriggerPolicy
        from cloud.types import now_ms

        _, engine, _ = _open(args)
        policy = TriggerPolicy(max_accuracy_drop=args.max_accuracy_drop, every_s=args.every_s)
        with session_scope(engine) as session:
            fired = watch.detect(session, args.model_id, policy, now_ms=now_ms(), since_ms=args.since_ms)
        if fired is None:
            print("no trigger: nothing to do")
            return NOTHING_TO_DO
        print(f"{fired.kind.value}: {fired.reason}")
        return 0

    return _guarded(run, args)


def _retrain(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.registry import load_or_create_keys
        from cloud.training import champion as rule
        from cloud.training import retrain as loop
        from cloud.training.triggers import Trigger, TriggerKind

        settings, engine, store = _open(args)
        policy = loop.RetrainPolicy(
            margin=rule.MarginPolicy(margin=args.margin, max_reference_loss=args.max_reference_loss,
                                     min_field_rows=args.min_field_rows),
            on_win="approval", manifest_valid_days=settings.manifest_valid_days,
        )  # fmt: skip
        trigger = Trigger(TriggerKind(args.trigger), f"{args.actor}: {args.reason or args.trigger}")
        result = loop.retrain(
            engine, store, load_or_create_keys(settings).manifest_signer(), args.model_id, trigger=trigger,
            actor=args.actor, policy=policy, field_dataset=args.dataset,
            progress=lambda step: print(f"  {step} ...", flush=True),
        )  # fmt: skip
        print(describe(result))
        if result.challenger is None:
            return NOTHING_TO_DO
        print(f"next: edgefleet pipeline rollout {args.model_id} {result.challenger}")
        return 0

    return _guarded(run, args)


def describe(result: Any) -> str:
    """A retrain's outcome in a few lines (also the demo's)."""
    won = f", challenger v{result.challenger}" if result.challenger else ""
    lines = [f"retrain run {result.run_id[:8]} ({result.trigger.kind.value}): champion v{result.champion} -> "
             f"{result.verdict.outcome.value.upper()}{won}"]  # fmt: skip
    lines += _comparison_lines(result)
    lines.append("  datasets: " + ", ".join(f"{role} {digest[:12]}" for role, digest in result.datasets.items()))
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.training import candidates
        from cloud.training import champion as rule
        from cloud.training.triggers import Trigger, TriggerKind

        _, engine, store = _open(args)
        margin = rule.MarginPolicy(margin=args.margin, max_reference_loss=args.max_reference_loss,
                                   min_field_rows=args.min_field_rows)  # fmt: skip
        trigger = Trigger(TriggerKind(args.trigger), f"{args.actor}: {args.reason or args.trigger}")
        trained = candidates.train(engine, store, args.model_id, trigger=trigger, margin=margin,
                                   field_dataset=args.dataset, progress=_progress(args))  # fmt: skip
        if args.json:
            print(json.dumps({"candidate": trained.id, "model_id": trained.model_id, "run_id": trained.run_id,
                              "champion": trained.champion, "datasets": trained.datasets, "new": trained.new,
                              "dropped_labels": trained.dropped_labels}))  # fmt: skip
        else:
            print(f"candidate {trained.id}" + ("" if trained.new else " (already trained from these inputs)"))
            print(f"  run {trained.run_id}, against champion v{trained.champion}; datasets: "
                  + ", ".join(f"{role} {digest[:12]}" for role, digest in trained.datasets.items()))
            print(f"next: edgefleet pipeline evaluate {trained.id}")
        return 0

    return _guarded(run, args)


def _progress(args: argparse.Namespace) -> Any:
    """Step names on stderr, so that stdout stays one JSON object under --json."""
    return lambda step: print(f"  {step} ...", file=sys.stderr if args.json else sys.stdout, flush=True)


def _compile(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.training import candidates

        _, engine, store = _open(args)
        artifacts = candidates.compile_candidate(engine, store, args.candidate, _progress(args))
        with session_scope(engine) as session:
            refused = candidates.refused_at_compile(candidates.get_candidate(session, args.candidate))
        if args.json:
            print(json.dumps({"candidate": args.candidate, "artifacts": artifacts, "refused_at_compile": refused}))
        elif refused is not None:
            print(f"candidate {args.candidate[:12]} refused at compile: no artifact of its recipe kept the "
                  f"accuracy of the source model; judged lost, the champion stays\n{refused}")  # fmt: skip
        else:
            print(f"candidate {args.candidate[:12]} compiled: "
                  + ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(artifacts.items())))  # fmt: skip
        return NOTHING_TO_DO if refused is not None else 0

    return _guarded(run, args)


def _register(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.registry import load_or_create_keys
        from cloud.training import candidates

        settings, engine, store = _open(args)
        signer = load_or_create_keys(settings).manifest_signer()
        version = candidates.register(engine, store, signer, args.candidate, actor=args.actor,
                                      manifest_valid_days=settings.manifest_valid_days,
                                      progress=_progress(args))  # fmt: skip
        with session_scope(engine) as session:
            model_id = candidates.get_candidate(session, args.candidate).model_id
        if args.json:
            print(json.dumps({"candidate": args.candidate, "model_id": model_id, "version": version}))
        elif version is None:
            print(f"candidate {args.candidate[:12]} did not win: nothing to register")
        else:
            print(f"{model_id} v{version} registered as challenger")
            print(f"next: edgefleet pipeline rollout {model_id} {version}")
        return NOTHING_TO_DO if version is None else 0

    return _guarded(run, args)


def _evaluate_candidate(args: argparse.Namespace) -> int:
    from cloud.training import candidates
    from cloud.training import champion as rule

    _, engine, store = _open(args)
    given = {k: v for k, v in (("margin", args.margin), ("max_reference_loss", args.max_reference_loss),
                               ("min_field_rows", args.min_field_rows)) if v is not None}  # fmt: skip
    judged = candidates.evaluate(engine, store, args.model_id, _progress(args), policy=given)
    won = judged.verdict.outcome == rule.Outcome.WIN
    source = "recorded" if judged.recorded else "given"
    if args.json:
        print(json.dumps({"candidate": judged.candidate, "champion": judged.champion,
                          "outcome": judged.verdict.outcome.value, "reasons": judged.verdict.reasons,
                          "policy": {**asdict(judged.policy), "source": source},
                          "field": _comparison(judged.field_eval), "reference": _comparison(judged.reference)}))
    else:
        print(f"candidate {judged.candidate[:12]} against champion v{judged.champion}: "
              f"{judged.verdict.outcome.value.upper()}")
        print("\n".join(_comparison_lines(judged)))
        p = judged.policy
        terms = f"margin {p.margin:+.3f}, max reference loss {p.max_reference_loss:.3f}, {p.min_field_rows} field rows"
        print(f"  judged by {terms}: " + ("as its train step recorded them" if judged.recorded else
              "as given here (`register` judges by the ones recorded at train time; train again with "
              "--margin to change those)"))  # fmt: skip
    return 0 if won else NOTHING_TO_DO


def _comparison(c: Any) -> dict[str, Any]:
    return {"n": c.n, "champion_accuracy": c.champion_accuracy, "challenger_accuracy": c.challenger_accuracy,
            "gain": c.gain, "gain_interval": c.gain_interval()}  # fmt: skip


def _evaluate(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        if args.challenger is None:
            if args.dataset or args.champion:
                raise ValueError("--dataset and --champion judge a registered version: name it (MODEL VERSION)")
            return _evaluate_candidate(args)
        if not args.dataset:
            raise ValueError("judging a registered version needs --dataset (a field dataset version)")
        from cloud.db import session_scope
        from cloud.training import champion as rule
        from cloud.training import watch
        from cloud.training.rejudge import judge_versions

        _, engine, store = _open(args)
        given = {k: v for k, v in (("margin", args.margin), ("max_reference_loss", args.max_reference_loss),
                                   ("min_field_rows", args.min_field_rows)) if v is not None}  # fmt: skip
        policy = replace(rule.MarginPolicy(), **given)
        with session_scope(engine) as session:
            champion = args.champion or watch.champion_version(session, args.model_id)
            judged = judge_versions(session, store, args.model_id, champion, args.challenger, args.dataset, policy)
        print(f"v{judged.challenger} against champion v{judged.champion} on dataset {judged.field_dataset[:12]}: "
              f"{judged.verdict.outcome.value.upper()}")
        print("\n".join(_comparison_lines(judged)))
        print(f"  judged by margin {policy.margin:+.3f}, max reference loss {policy.max_reference_loss:.3f}, "
              f"{policy.min_field_rows} field rows")  # fmt: skip
        return 0 if judged.verdict.outcome == rule.Outcome.WIN else NOTHING_TO_DO

    return _guarded(run, args)


def _rollout(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.db.tables import DeploymentCreate
        from cloud.rollout.staged import plan_staged
        from cloud.training import retrain as loop

        settings, engine, _ = _open(args)
        policy = loop.rollout_policy(loop.RetrainPolicy(canary=args.canary, dwell_s=args.dwell_s,
                                                        min_inferences=args.min_inferences))  # fmt: skip
        with session_scope(engine) as session:
            targets = [d.strip() for d in args.devices.split(",") if d.strip()]
            targets = targets or loop.devices_running(session, args.model_id)
            if not targets:
                print(f"error: no device runs {args.model_id}; name the targets with --devices", file=sys.stderr)
                return 1
            request = DeploymentCreate(model_id=args.model_id, version=args.version, device_ids=targets)
            deployment, rollout = plan_staged(session, request, policy, chunk_size_bytes=settings.chunk_size_bytes)
            deployment_id, waves = deployment.id, [len(w) for w in rollout.waves]
        print(f"canary rollout {deployment_id} of {args.model_id} v{args.version}: waves of {waves} device(s); "
              f"follow it with `edgefleet rollout status {deployment_id}`")
        return 0

    return _guarded(run, args)


def _comparison_lines(judged: Any) -> list[str]:
    lines = []
    for c in (judged.field_eval, judged.reference):
        if not c.n:
            lines.append(f"  {c.name:<9} not evaluated")
            continue
        low, high = c.gain_interval() or (0.0, 0.0)
        lines.append(f"  {c.name:<9} n={c.n:<4} champion {c.champion_accuracy or 0:.3f}  challenger "
                     f"{c.challenger_accuracy or 0:.3f}  gain {c.gain or 0:+.3f} "
                     f"[{low:+.3f}, {high:+.3f}]")  # fmt: skip
    lines.append("  " + "; ".join(judged.verdict.reasons))
    return lines


def _promote(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.training import retrain as loop

        _, engine, _ = _open(args)
        with session_scope(engine) as session:
            moved = loop.promote(session, args.model_id, args.version, actor=args.actor, reason=args.reason)
        print(f"{args.model_id} v{args.version}: " + (", ".join(moved) + " moved" if moved else "already there"))
        return 0

    return _guarded(run, args)


def _aliases(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from cloud.db import session_scope
        from cloud.registry import aliases, get_model_version

        _, engine, _ = _open(args)
        with session_scope(engine) as session:
            get_model_version(session, args.model_id)  # an unknown model is an error, not an empty answer
            current = dict(sorted(aliases.current(session, args.model_id).items()))
            moves = [m.model_dump(exclude={"id", "model_id"}) for m in aliases.history(session, args.model_id)]
        if args.json:
            print(json.dumps({"model_id": args.model_id, "aliases": current, "history": moves}, indent=2))
            return 0
        if not current:
            print(f"{args.model_id}: no alias yet (edgefleet pipeline retrain {args.model_id} sets them)")
        for alias, version in current.items():
            print(f"{alias:<11} v{version}")
        if moves:
            print()
            print_rows(moves, ALIAS_MOVE_COLUMNS, as_json=False)
        return 0

    return _guarded(run, args)


ALIAS_MOVE_COLUMNS = [
    Column("when (UTC)", lambda m: time.strftime("%Y-%m-%d %H:%M", time.gmtime(m["ts_ms"] / 1000)), key=True),
    Column("alias", lambda m: m["alias"], key=True),
    Column("from", lambda m: m["from_version"], key=True),
    Column("to", lambda m: m["to_version"], key=True),
    Column("by", lambda m: m["actor"]),
    Column("reason", lambda m: m["reason"]),
]


def _training_args(parser: argparse.ArgumentParser) -> None:
    """What `train` and `retrain` share: the data, the trigger and the champion/challenger rule's terms."""
    parser.add_argument("--dataset", help="a field dataset version to use (default: snapshot every labelled sample)")
    parser.add_argument("--trigger", default="operator", choices=("operator", "drift", "accuracy", "schedule"))
    parser.add_argument("--reason", default="", help="why (kept in the run and the alias history)")
    parser.add_argument("--actor", default=getpass.getuser(), help="who (default: this user)")
    parser.add_argument("--margin", type=float, default=0.02, help="field gain's 95 %% low bound must beat this")
    parser.add_argument("--max-reference-loss", type=float, default=0.03)
    parser.add_argument("--min-field-rows", type=int, default=30)
