"""Crash marks: a runtime whose load killed the agent is not chosen again, but not forever (pure: no I/O).

A mark carries a stamp, "<agent version>|<runtime version>" when it was set. At start a mark whose stamp
differs from now is cleared (an agent or runtime upgrade may have fixed the crash: the next load is
checked again, in a child process or by the journal's load counter); so is the mark of a runtime that
has just loaded a model successfully. A mark from a journal without stamps takes today's stamp.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from edge_agent.update.journal import Journal

log = logging.getLogger(__name__)


def stamp(agent_version: str, runtime_version: str) -> str:
    return f"{agent_version}|{runtime_version}"


def mark(journal: Journal, runtime: str, stamps: Mapping[str, str]) -> Journal:
    """`runtime` killed the agent: not chosen again until its stamp changes or it loads a model."""
    return journal.with_(
        crashed_runtimes=journal.crashed_runtimes | {runtime},
        crash_stamps={**journal.crash_stamps, runtime: stamps.get(runtime, "")},
    )


def clear(journal: Journal, runtime: str) -> Journal:
    """`runtime` loaded a model: whatever crashed before does not crash it now."""
    if runtime not in journal.crashed_runtimes:
        return journal
    log.info("runtime %s loaded a model: its crash mark is cleared", runtime)
    return journal.with_(
        crashed_runtimes=journal.crashed_runtimes - {runtime},
        crash_stamps={k: v for k, v in journal.crash_stamps.items() if k != runtime},
    )


def clear_stale(journal: Journal, stamps: Mapping[str, str]) -> Journal:
    """Clear the marks set under another agent or runtime version; stamp the marks that have none."""
    for runtime in sorted(journal.crashed_runtimes):
        then, now = journal.crash_stamps.get(runtime), stamps.get(runtime, "")
        if then is None:
            journal = journal.with_(crash_stamps={**journal.crash_stamps, runtime: now})
        elif then != now:
            log.warning("runtime %s crashed under %s, runs %s now: trying it again", runtime, then, now)
            journal = clear(journal, runtime)
    return journal
