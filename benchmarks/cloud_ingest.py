"""Ingestion throughput: telemetry windows per second by batch size, on SQLite and (if configured)
PostgreSQL, first delivery and a full replay (every message a duplicate).

    .venv/bin/python benchmarks/cloud_ingest.py [--windows 2000] [--postgres postgresql://...]

Prints one JSON object last: {"results": [...], "ratios": {...}}; ratios compare each batch size with
batch size 1 on the same database.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from cloud.db import create_tables, drop_schema, make_engine  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.monitoring import Ingestor  # noqa: E402
from protocols.topics import Channel, device_topic  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

BATCH_SIZES = (1, 50, 200)
DEVICES = [f"dev-{i:02d}" for i in range(20)]


def messages(n: int) -> list[tuple[str, bytes]]:
    out = []
    for seq in range(1, n + 1):
        device_id = DEVICES[seq % len(DEVICES)]
        window = pb.TelemetryWindow(
            schema_version=1, device_id=device_id, seq=seq, window_start_ms=seq, window_end_ms=seq + 1,
            inference_count=100,
            model=pb.ModelRef(model_id="m", version="1"), latency_p50_us=120.0, latency_p95_us=300.0,
            latency_us=pb.Histogram(bounds=[100, 200, 400, 800], counts=[40, 40, 15, 5, 0]),
            features=[pb.FeatureSketch(index=i, counts=[10, 20, 40, 20, 10]) for i in range(8)],
            predictions=pb.PredictionProfile(labels=["a", "b", "c"], counts=[30, 30, 40]),
        )  # fmt: skip
        out.append((device_topic(device_id, Channel.TELEMETRY), window.SerializeToString()))
    return out


def run(url: str, schema: str | None, batch_size: int, msgs: list[tuple[str, bytes]]) -> dict[str, float]:
    engine = make_engine(url, schema=schema)
    create_tables(engine)
    try:
        with Session(engine) as session:  # the cloud stores only enrolled devices' messages
            for device_id in DEVICES:
                enroll_device(session, device_id)
            session.commit()
        ingestor = Ingestor(engine)
        rates = {}
        for phase in ("first", "replay"):
            start = time.perf_counter()
            for i in range(0, len(msgs), batch_size):
                ingestor.process(msgs[i : i + batch_size])
            rates[phase] = len(msgs) / (time.perf_counter() - start)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM telemetryrecord")).scalar_one()
        assert stored == len(msgs), f"stored {stored} of {len(msgs)}"
        return rates
    finally:
        drop_schema(engine)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--postgres", help="PostgreSQL URL (a throw-away schema is created in it)")
    args = parser.parse_args()
    msgs = messages(args.windows)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
        for name, base in targets:
            for batch_size in BATCH_SIZES:
                url = f"sqlite:///{tmp}/bench-{batch_size}.db" if base is None else base
                schema = None if base is None else f"efbench_{secrets.token_hex(4)}"
                rates = run(url, schema, batch_size, msgs)
                row = {"database": name, "batch_size": batch_size, "windows": len(msgs),
                       "first_per_s": round(rates["first"]), "replay_per_s": round(rates["replay"])}  # fmt: skip
                results.append(row)
                print(row, file=sys.stderr)
    ratios = {}
    for row in results:
        base = next(r for r in results if r["database"] == row["database"] and r["batch_size"] == 1)
        key = f"{row['database']}_batch{row['batch_size']}_vs_batch1"
        ratios[key] = round(row["first_per_s"] / base["first_per_s"], 2)
    print(json.dumps({"benchmark": "cloud_ingest", "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
