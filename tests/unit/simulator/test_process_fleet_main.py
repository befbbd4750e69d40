"""ProcessFleet's workers do not run the parent's main script again (spawn would: a benchmark's imports,
the whole cloud, cost each worker seconds of CPU and its memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    sys.path.insert(0, {root!r})
    with open({marks!r}, "a") as marks:  # every process that runs this script says so
        marks.write(f"{{os.getpid()}}\\n")

    if __name__ == "__main__":
        from simulator.process_fleet import ProcessFleet

        fleet = ProcessFleet([], workers=1, mqtt_url="mqtt://127.0.0.1:1", trust_path=Path("absent"),
                             state_root=Path({state!r}))
        with fleet:
            assert fleet.connected() == 0
            print("worker", fleet.rss_kb())
    """
)


def test_workers_do_not_run_the_parents_main_script(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(root=str(ROOT), marks=str(marks), state=str(tmp_path / "state")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "worker [" in done.stdout  # a worker did start and answer
    assert len(marks.read_text().split()) == 1  # the parent's mark alone: no worker ran the script
