"""A rollout controller in a process of its own, as a second cloud process would run it (for tests that
show two processes never take the same step twice). Top-level so `multiprocessing` can spawn it."""

from __future__ import annotations

from pathlib import Path


def run_controller(database_url: str, keys_dir: str, ticks: int) -> None:
    from cloud.db import make_engine
    from cloud.registry.keys import KeyStore
    from cloud.rollout import Deployer, Director, RolloutController
    from edge_agent.transport import MemoryBroker, MemoryTransport

    engine = make_engine(database_url)
    transport = MemoryTransport(MemoryBroker())  # its messages go nowhere: the database is what is checked
    transport.start()
    director = Director.from_keys(KeyStore(Path(keys_dir)))
    controller = RolloutController(Deployer(engine, transport, director=director, chunk_size_bytes=1024))
    try:
        for _ in range(ticks):
            controller.tick()
    finally:
        engine.dispose()
