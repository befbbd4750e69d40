"""A throwaway MQTT client process with a last will, for tests that kill a client abruptly.

    python -m support.will_client URL CLIENT_ID WILL_TOPIC WILL_PAYLOAD PROTOCOL

Prints "ready" once connected, then waits to be killed. `start_will_client()` runs it and waits for
"ready"; SIGKILL the returned process and the broker must publish the will.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

_TESTS_DIR = Path(__file__).resolve().parents[1]
_REPO_DIR = _TESTS_DIR.parent


def start_will_client(
    url: str, client_id: str, will_topic: str, will_payload: str, protocol: str = "5", timeout_s: float = 20.0
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_TESTS_DIR), str(_REPO_DIR)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.will_client", url, client_id, will_topic, will_payload, protocol],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # bounded: the child exits (EOF) if it cannot connect in timeout_s
    if line != "ready":
        proc.kill()
        proc.wait(timeout_s)
        proc.stdout.close()
        raise RuntimeError(f"will client did not connect to {url} (said {line!r})")
    return proc


def main(argv: list[str]) -> int:
    from edge_agent.paho_transport import PahoTransport
    from edge_agent.transport import Will

    url, client_id, topic, payload, protocol = argv
    transport = PahoTransport(
        url, client_id, will=Will(topic, payload.encode()), protocol=protocol,  # type: ignore[arg-type]
        reconnect_min_s=0.1, reconnect_max_s=0.5,
    )
    transport.start()
    if not transport.wait_connected(15):
        return 1
    print("ready", flush=True)
    time.sleep(120)  # killed long before this
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
