"""Device facts (Device.facts, as the agent reports them) and spool drop totals read for a person: the
rows of a device page's "Device" list and the one-line summary of a fleet table row. Pure functions.

A fact the device could not read is absent from Device.facts and shows as "–" (or is left out of a summary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# vcgencmd get_throttled bits (Raspberry Pi firmware): now (0-3) and since boot (16-19)
_THROTTLE_BITS = {
    0: "under-voltage now",
    1: "frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size_text(n_bytes: Any) -> str:
    if not isinstance(n_bytes, int | float) or n_bytes <= 0:
        return "–"
    value, unit = float(n_bytes), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} {_UNITS[unit]}" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def throttled_text(raw: Any) -> str:
    """"0x50005" -> "0x50005: under-voltage now, throttled now, ..."; "0x0" -> "no"; "" -> "–"."""
    if not raw:
        return "–"
    try:
        bits = int(str(raw), 0)
    except ValueError:
        return str(raw)  # a format we do not know: shown as the device sent it
    if bits == 0:
        return "no"
    meanings = [text for bit, text in _THROTTLE_BITS.items() if bits >> bit & 1]
    return f"{raw}: {', '.join(meanings)}" if meanings else str(raw)


def is_throttled_now(raw: Any) -> bool:
    try:
        return bool(int(str(raw), 0) & 0xF) if raw else False
    except ValueError:
        return False


def fact_rows(facts: Mapping[str, Any], spool_dropped: Mapping[str, int]) -> list[tuple[str, str]]:
    """(label, text) rows for the device page."""
    cpu = facts.get("cpu_model") or ""
    count = facts.get("cpu_count")
    runtimes = facts.get("runtimes") or {}
    temperature = facts.get("temperature_c")
    memory = "–"
    if facts.get("memory_total_bytes"):
        memory = f"{size_text(facts.get('memory_available_bytes'))} free of {size_text(facts['memory_total_bytes'])}"
    return [
        ("Architecture", str(facts.get("architecture") or "–")),
        ("OS", str(facts.get("os") or "–")),
        ("Python", str(facts.get("python_version") or "–")),
        ("Runtimes", ", ".join(f"{name} {version}".strip() for name, version in runtimes.items()) or "–"),
        ("CPU", f"{count} × {cpu}" if count and cpu else str(count or cpu or "–")),
        ("Memory", memory),
        ("Temperature", f"{temperature:.1f} °C" if isinstance(temperature, int | float) else "–"),
        ("Throttled", throttled_text(facts.get("throttled"))),
        ("Disk free", size_text(facts.get("disk_free_bytes"))),
        ("Spool drops", spool_text(spool_dropped)),
    ]


def spool_text(spool_dropped: Mapping[str, int]) -> str:
    """What the device's full outbox spool dropped (totals), or "none"."""
    counts = [(kind, int(spool_dropped.get(kind, 0))) for kind in ("events", "telemetry", "samples")]
    if not any(n for _, n in counts):
        return "none"
    return ", ".join(f"{n} {kind}" for kind, n in counts if n)


def summary(facts: Mapping[str, Any]) -> str:
    """One line for the fleet table: architecture, memory, temperature, throttling; "" if nothing known."""
    parts = [str(facts.get("architecture") or "")]
    if facts.get("memory_total_bytes"):
        parts.append(size_text(facts["memory_total_bytes"]))
    temperature = facts.get("temperature_c")
    if isinstance(temperature, int | float):
        parts.append(f"{temperature:.0f} °C")
    if is_throttled_now(facts.get("throttled")):
        parts.append("throttled")
    return " · ".join(p for p in parts if p)
