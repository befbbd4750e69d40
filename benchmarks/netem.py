"""The shaping proxy (simulator.netem) at fleet scale: what it costs, and what a profile does to a fan-out.

For each client count, on a Mosquitto of its own, side by side in one run: N plain gmqtt clients on one
event loop connect, subscribe and read 10 retained QoS 1 chunks of 10 KB (the fleet benchmark's fan-out
floor), once straight to the broker and once through the proxy per profile:

  direct_s          to the broker
  proxy_<name>_s    through the proxy with profile <name> ("unshaped": no delay, no bucket: the proxy's
                    own cost; then the named profiles, with their Poisson drops switched off so that every
                    run reads the same bytes)
  <name>_over_direct  the ratio

    .venv/bin/python benchmarks/netem.py [--clients 200,1000] [--profiles wired,4g,3g]

Prints one JSON object last: {"records": [...]}, one record per client count.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the private Mosquitto the tests use (tests/support/mosquitto.py)

from fanout_floor import fan_out  # noqa: E402  (benchmarks/, the script's own folder)
from support.mosquitto import MosquittoBroker  # noqa: E402

from simulator.netem import PROFILES, NetworkProfile, NetworkShaper  # noqa: E402


def measure(broker_url: str, clients: int, profiles: list[str], timeout_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"clients": clients}
    direct = fan_out(broker_url, broker_url, clients, timeout_s, "direct")
    record["direct_s"] = None if direct is None else round(direct, 3)
    for name in ["unshaped", *profiles]:
        profile = (
            NetworkProfile() if name == "unshaped" else PROFILES[name].model_copy(update={"disconnects_per_hour": 0})
        )
        with NetworkShaper(broker_url, lambda _device, p=profile: p) as shaper:
            elapsed = fan_out(broker_url, shaper.url, clients, timeout_s, name.replace("-", ""))
        key = name.replace("-", "_")
        record[f"proxy_{key}_s"] = None if elapsed is None else round(elapsed, 3)
        record[f"{key}_over_direct"] = round(elapsed / direct, 2) if elapsed and direct else None
        print(f"{clients} clients, {name}: {record[f'proxy_{key}_s']} s (direct {record['direct_s']} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="200,1000")
    parser.add_argument("--profiles", default="wired,4g,3g")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"no profile named {', '.join(unknown)} (profiles: {', '.join(PROFILES)})")
    records = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-netem-") as workdir:
        for clients in (int(n) for n in args.clients.split(",")):
            with MosquittoBroker(Path(workdir) / f"mosquitto-{clients}") as broker:
                records.append(measure(broker.url, clients, profiles, args.timeout))
    print(json.dumps({"records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
