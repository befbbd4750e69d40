"""Stationary live traffic for a simulated fleet: every device answers the same requests and sends a telemetry
window each period, in a background thread, until stopped (tests of staged rollouts, benchmarks, and a
`ProcessFleet` worker's own share of the fleet)."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_agent.errors import NoModelError
from simulator.devices import DeviceGroup


class Traffic:
    """Every device answers the same `rows_per_round` requests and sends a telemetry window every `period_s`
    (0.3 s), until stopped (at most `rounds` times): stationary traffic, so only a model change can move the
    prediction distribution. Any `DeviceGroup` (a `SimulatedFleet` or an `AgentHost`): it uses only their
    `devices` and `flush_telemetry()`, and an agent's predict() may be called from any thread. A context
    manager, or start() and stop(). `phased`: each device on its own phase of the period (device i of n at
    i/n of it), as real devices are, instead of every device's requests and window in one burst."""

    def __init__(self, fleet: DeviceGroup, rows: np.ndarray, *, rounds: int = 2000, period_s: float = 0.3,
                 rows_per_round: int = 20, phased: bool = False) -> None:  # fmt: skip
        self.fleet, self.rows, self.rounds = fleet, rows[:rows_per_round].astype(np.float32), rounds
        self.period_s, self.phased = period_s, phased
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        if self.phased:
            return self._run_phased()
        start = time.monotonic()
        for r in range(self.rounds):  # bounded: ~10 minutes at most by default
            # on a fixed schedule, as the phased rounds: waiting period_s after each round made the period
            # period_s plus the round's own work (~1.3-1.6 s for 1 s at load 20 with 200 devices). A late round
            # is not skipped (skipping made a 1.2 s round's period 2 s): the next one starts at once instead
            due = start + (r + 1) * self.period_s
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            for device in self.fleet.devices.values():
                try:
                    device.agent.predict(self.rows)
                except NoModelError:  # not installed yet: a real client would retry too
                    continue
            self.fleet.flush_telemetry()

    def _run_phased(self) -> None:
        devices = list(self.fleet.devices.values())
        start = time.monotonic()
        for r in range(self.rounds):
            for i, device in enumerate(devices):
                due = start + (r + 1 + i / len(devices)) * self.period_s
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                try:
                    device.agent.predict(self.rows)
                except NoModelError:
                    continue
                device.agent.flush_telemetry()
