"""Console API speed: small responses on a kept-alive connection, and GETs at 1, 30 and 100 concurrent
clients (no keep-alive), before and after the fixes, side by side in one run.

    .venv/bin/python benchmarks/console_api.py [--postgres postgresql://...] [--seconds 3]

Candidates, each served by uvicorn in its own process (so the load generator does not share its GIL), all
up at once and measured in turn at each level, so that a change in the machine's load hits them alike:
  before: the listening socket from socket.create_server (no TCP_NODELAY on connections), the engine as it
          was (default QueuePool 5+10, 30 s pool timeout, SQLite: every transaction BEGIN IMMEDIATE) and the
          session dependency as it was (a sync generator, no bound on sessions)
  no-cache: cloud.api.listen.listen_socket, cloud.db.make_engine and cloud.api.deps.get_session as they are,
          with the read and token caches off (api_read_cache_s=0, api_token_cache_s=0)
  after-no-lane: the same with the caches as configured by default (lists 1 s, token records 2 s), every
          request through FastAPI's routing and dependencies (cloud.api.fast_reads' lane taken out)
  after:  the same with the fast lane: a repeated GET of a cached list is answered before routing
  after+httptools: the same on uvicorn's httptools parser and uvloop (only if both are installed; what
          `edgefleet up` runs then, uvicorn's "auto")
  after+httptools no-refresh no-freeze: the same as it was before this change: the read cache without
          refresh ahead (a busy key expired under all its readers once a TTL; REFRESH_SHARE = 0) and the
          heap not frozen after start (full collections walk every object; cloud.heap)
  after+httptools no-freeze: refresh ahead, heap not frozen
  after+httptools: both, what `edgefleet up` runs
  after+httptools x2: the same in two processes sharing the port (SO_REUSEPORT), as two API processes would
  floor:  a bare ASGI app answering fixed bytes on uvicorn + httptools + uvloop: no routing, no auth, no
          cache; what uvicorn itself costs, the best any single API process can do here
The load generator is wrk (C, benchmarks/wrk.py) when installed, keep-alive and new-connection side by side;
without it the Python generator below, new-connection only (each row's `generator` says which).
The Python load generator runs in this process on uvloop when installed (a new connection per request costs the
client as much as the server); each row says how busy it was (`client_cpu`: its CPU seconds per second),
so a row where it nears 1.0 measured the client as much as the server.
Prints one JSON object last: {"results": [...], "ratios": {...}}; ratios compare requests/s with before's
and p99 with no-cache's (the caches' own effect).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wrk  # noqa: E402  (benchmarks/wrk.py)

from cloud.api.deps import ServicesDep  # noqa: E402  (FastAPI resolves the override's annotation here)

PATHS = ("/api/v1/models", "/api/v1/devices")
CONCURRENCY = (1, 30, 100)
TIMEOUT_S = 10.0


def _legacy_engine(url: str, schema: str | None) -> Any:
    """The engine as cloud/db/engine.py made it before this change (for the 'before' candidate)."""
    from sqlalchemy import event
    from sqlmodel import create_engine

    if not url.startswith("sqlite"):
        options = {"options": f"-csearch_path={schema}"} if schema else {}
        return create_engine(url, pool_pre_ping=True, connect_args=options)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def seed(url: str, schema: str | None) -> str:
    """Tables, 40 devices, 5 models x 4 versions and an operator token; returns the token."""
    from sqlmodel import Session

    from cloud.db import create_tables, make_engine
    from cloud.db.tables import Device, ModelVersion
    from cloud.identity.tokens import Role, create_token

    engine = make_engine(url, schema=schema)
    create_tables(engine)
    with Session(engine) as session:
        for i in range(1, 41):
            session.add(Device(id=f"pi-{i:02d}", labels={"site": "lab", "rack": str(i % 4)}, online=True,
                               active_model_id="iris", active_version="1.0.3", update_state="active"))
        for m in range(5):
            for v in range(4):
                session.add(ModelVersion(model_id=f"model-{m}", version=f"1.0.{v}", sequence=v + 1,
                                         signed_manifest=b"\x00" * 512, metrics={"accuracy": 0.9}))
        _, token = create_token(session, name="bench", role=Role.VIEWER, created_by="bench")
        session.commit()
    engine.dispose()
    return token


def _legacy_get_session(services: Any) -> Iterator[Any]:
    """cloud.api.deps.get_session as it was: a session per request, however many requests are in."""
    from sqlmodel import Session

    with Session(services.engine) as session:
        yield session


def _shared_socket(port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT on port (0: a free one): several processes bind the same port and
    the kernel spreads the connections between them (several API processes on one machine)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def _serve(candidate: str, url: str, schema: str | None, data_dir: str, ports: Any, port: int = 0) -> None:
    import uvicorn

    from cloud.api import AppServices, create_app
    from cloud.api.deps import get_session
    from cloud.api.listen import listen_socket
    from cloud.db import make_engine
    from cloud.settings import CloudSettings

    if candidate == "floor":
        sock = listen_socket("127.0.0.1", 0)
        ports.put(sock.getsockname()[1])
        config = uvicorn.Config(_floor_app, log_level="error", lifespan="off", access_log=False, http="httptools",
                                loop="uvloop")  # fmt: skip
        uvicorn.Server(config).run(sockets=[sock])
        return
    if "no-refresh" in candidate:  # the read cache as it was: a busy key expired under all its readers
        from cloud.api import read_cache

        read_cache.REFRESH_SHARE = 0.0
    if candidate == "before":
        engine = _legacy_engine(url, schema)
        sock = socket.create_server(("127.0.0.1", 0))
    else:
        engine = make_engine(url, schema=schema)
        sock = _shared_socket(port) if candidate.endswith(" x2") else listen_socket("127.0.0.1", 0)
    caches = {} if candidate.startswith("after") else {"api_read_cache_s": 0, "api_token_cache_s": 0}
    settings = CloudSettings(data_dir=Path(data_dir), **caches)  # type: ignore[arg-type]
    app = create_app(settings, AppServices(engine=engine, deployer=None))  # type: ignore[arg-type]
    if candidate in ("before", "no-cache", "after-no-lane"):  # the middleware stack is built on first call
        app.fast_reads = None
    if candidate == "before":

        def legacy(services: ServicesDep) -> Iterator[Any]:
            yield from _legacy_get_session(services)

        app.dependency_overrides[get_session] = legacy
    ports.put(sock.getsockname()[1])
    # h11 and asyncio pinned for the others: uvicorn's "auto" picks uvloop when installed, and uvloop sets
    # TCP_NODELAY on every TCP socket itself, which would hide the difference being measured
    fast = {"http": "h11", "loop": "asyncio"}
    if candidate.startswith("after+httptools"):
        fast = {"http": "httptools", "loop": "uvloop"}
    if candidate.startswith("after+httptools") and "no-freeze" not in candidate:
        from cloud.heap import freeze_startup_heap

        freeze_startup_heap()  # as `edgefleet up` does
    config = uvicorn.Config(app, log_level="error", lifespan="off", access_log=False, **fast)  # type: ignore[arg-type]
    uvicorn.Server(config).run(sockets=[sock])


_FLOOR_BODY = b"[" + b",".join([b'{"id": "pi-00", "labels": {"site": "lab"}, "online": true}'] * 100) + b"]"


async def _floor_app(scope: Any, receive: Any, send: Any) -> None:
    """Fixed bytes, no routing, no auth: what uvicorn alone costs, the floor under any app of ours."""
    headers = [(b"content-length", str(len(_FLOOR_BODY)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _FLOOR_BODY})


def candidates() -> list[str]:
    import importlib.util

    fast = all(importlib.util.find_spec(name) for name in ("httptools", "uvloop"))
    names = ["before", "no-cache", "after-no-lane", "after"]
    both = ["after+httptools no-refresh no-freeze", "after+httptools no-freeze", "after+httptools",
            "after+httptools x2", "floor"]
    return [*names, *both] if fast else names


def keepalive_ms(port: int, token: str, n: int = 200) -> dict[str, float]:
    """Median and p99 of n sequential GETs of one device on one kept-alive connection (http.client)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/api/v1/devices/pi-01", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return {"keepalive_p50_ms": round(statistics.median(times), 2), "keepalive_p99_ms": round(_p99(times), 2)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _one(port: int, request: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await reader.read()  # Connection: close, so the server ends the stream
            writer.close()
        status = int(answer.split(b" ", 2)[1]) if answer else 0
    except (TimeoutError, OSError):
        status = 0
    return (time.perf_counter() - start) * 1000, status


async def _load(port: int, path: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` closed-loop clients, each a new connection per request, for `seconds`."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               "Connection: close\r\n\r\n").encode()
    results: list[tuple[float, int]] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            results.append(await _one(port, request))

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    client_cpu = (time.process_time() - cpu) / elapsed
    ok = [ms for ms, status in results if status == 200]
    return {"generator": "python", "keepalive": False, "path": path, "clients": clients,
            "client_cpu": round(client_cpu, 2), "requests": len(results),
            "ok": len(ok), "failed": len(results) - len(ok), "rps": round(len(ok) / elapsed, 1),
            "p50_ms": round(statistics.median(ok), 1) if ok else None, "p99_ms": round(_p99(ok), 1) if ok else None}


def _run(coroutine: Any) -> Any:
    """asyncio.run, on uvloop when installed: the load generator's own cost is then a third lower."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_all(names: list[str], url: str, schema: str | None, token: str, seconds: float,
            levels: tuple[int, ...] = CONCURRENCY, rounds: int = 1) -> list[dict]:
    ctx = mp.get_context("spawn")
    database = "postgresql" if schema else "sqlite"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as data_dir:
        servers, ports = {}, {}
        try:
            for name in names:
                queue = ctx.Queue()
                servers[name] = ctx.Process(target=_serve, args=(name, url, schema, data_dir, queue), daemon=True)
                servers[name].start()
                ports[name] = queue.get(timeout=60)
                if name.endswith(" x2"):  # a second process on the same port
                    second = ctx.Process(target=_serve, args=(name, url, schema, data_dir, queue, ports[name]),
                                         daemon=True)  # fmt: skip
                    second.start()
                    queue.get(timeout=60)
                    servers[name + " (2)"] = second
            time.sleep(1.0)
            for name in names:
                rows.append({"candidate": name, "database": database, "test": "keepalive",
                             **keepalive_ms(ports[name], token)})
            for path in PATHS:
                for clients in levels:
                    for keepalive in (True, False) if wrk.available() else (False,):
                        runs: dict[str, list[dict]] = {name: [] for name in names}
                        for _ in range(rounds):  # interleaved: a burst of load on the machine hits all alike
                            for name in names:
                                row = wrk.run(f"http://127.0.0.1:{ports[name]}", path, token, clients, seconds,
                                              keepalive) or _run(_load(ports[name], path, token, clients, seconds))
                                runs[name].append(row)
                                print(name, row, file=sys.stderr)
                                time.sleep(0.5)  # let timed-out requests drain before the next run
                        for name in names:
                            rows.append({"candidate": name, "database": database, "test": "concurrent",
                                         **_median_row(runs[name])})
        finally:
            for server in servers.values():
                server.terminate()
                server.join(10)
    return rows


def _median_row(runs: list[dict]) -> dict[str, Any]:
    """One row for a candidate's rounds: the median of each figure, and the rounds' p99s as measured."""
    row = dict(runs[-1])
    for figure in ("rps", "p50_ms", "p99_ms", "client_cpu", "sched_delay_p99_ms"):
        values = [r[figure] for r in runs if r.get(figure) is not None]
        row[figure] = round(statistics.median(values), 2) if values else None
    row.update(requests=sum(r["requests"] for r in runs), failed=sum(r["failed"] for r in runs),
               rounds=len(runs), p99_ms_each=[r["p99_ms"] for r in runs])
    return row


def ratios(results: list[dict]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    keyed = {(r["candidate"], r["database"], r["test"], r.get("path"), r.get("clients"), r.get("keepalive")): r
             for r in results}  # fmt: skip
    for (candidate, database, test, path, clients, keepalive), after in keyed.items():
        level = (database, test, path, clients, keepalive)
        before, uncached, laneless, as_was, floor = (keyed.get((name, *level)) for name in (
            "before", "no-cache", "after-no-lane", "after+httptools no-refresh no-freeze", "floor"))
        label = f"{database} {path} c={clients} {'keep-alive' if keepalive else 'new-conn'}"
        laned = candidate.startswith("after") and candidate != "after-no-lane" and test == "concurrent"
        if laned and laneless and laneless["p99_ms"] and after["p99_ms"]:
            out[f"{label} p99 after-no-lane/{candidate}"] = round(laneless["p99_ms"] / after["p99_ms"], 1)
        httptools = candidate.startswith("after+httptools") and test == "concurrent" and after["p99_ms"]
        if httptools and as_was and as_was is not after and as_was["p99_ms"]:
            out[f"{label} p99 as-was/{candidate}"] = round(as_was["p99_ms"] / after["p99_ms"], 1)
        if httptools and floor and floor["p99_ms"]:  # how far above what uvicorn alone costs
            out[f"{label} p99 {candidate}/floor"] = round(after["p99_ms"] / floor["p99_ms"], 1)
        cached = candidate.startswith("after") and test == "concurrent"
        if cached and uncached and uncached["p99_ms"] and after["p99_ms"]:
            out[f"{label} p99 no-cache/{candidate}"] = round(uncached["p99_ms"] / after["p99_ms"], 1)
        if candidate == "before" or before is None:
            continue
        if test == "keepalive":
            ratio = before["keepalive_p50_ms"] / after["keepalive_p50_ms"]
            out[f"{database} keepalive p50 before/{candidate}"] = round(ratio, 1)
        elif before["rps"] and after["rps"]:
            out[f"{label} rps {candidate}/before"] = round(after["rps"] / before["rps"], 2)
        elif after["rps"]:
            out[f"{label} rps {candidate}/before"] = None  # before: no request succeeded
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="also measure on this PostgreSQL (a throw-away schema is used)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrency level")
    parser.add_argument("--clients", default=",".join(map(str, CONCURRENCY)),
                        help="concurrency levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per candidate and level, interleaved; rows give medians")
    parser.add_argument("--only", help="candidates to run, comma-separated (before, no-cache, after-no-lane, "
                                       "after, after+httptools)")
    args = parser.parse_args()
    from cloud.db import drop_schema, make_engine

    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, str | None]] = [(f"sqlite:///{tmp}/bench.db", None)]
        if args.postgres:
            targets.append((args.postgres, f"bench_{secrets.token_hex(4)}"))
        for url, schema in targets:
            token = seed(url, schema)
            try:
                names = [name for name in candidates() if args.only is None or name in args.only.split(",")]
                levels = tuple(int(c) for c in args.clients.split(","))
                results += run_all(names, url, schema, token, args.seconds, levels, args.rounds)
            finally:
                if schema:
                    drop_schema(make_engine(url, schema=schema))
    load = os.getloadavg()
    print(json.dumps({"benchmark": "console_api", "generator": "wrk" if wrk.available() else "python",
                      "loadavg": [round(x, 2) for x in load], "results": results, "ratios": ratios(results)}))


if __name__ == "__main__":
    main()
