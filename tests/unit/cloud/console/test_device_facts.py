"""Device facts read for a person (cloud.console.device_facts)."""

from __future__ import annotations

import pytest

from cloud.console import device_facts


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("0x0", "no"),
        ("", "–"),
        ("0x4", "0x4: throttled now"),
        ("0x50000", "0x50000: under-voltage since boot, throttled since boot"),
        ("throttled=weird", "throttled=weird"),
    ],
)
def test_throttling_bits_are_spelled_out(raw: str, text: str) -> None:
    assert device_facts.throttled_text(raw) == text


def test_sizes_and_summaries() -> None:
    assert device_facts.size_text(512) == "512 B" and device_facts.size_text(3 * 2**30) == "3.0 GiB"
    assert device_facts.size_text(None) == "–" and device_facts.size_text(0) == "–"
    assert device_facts.summary({}) == ""
    assert device_facts.summary({"architecture": "x86_64", "throttled": "0x50000"}) == "x86_64"  # past, not now
    assert device_facts.spool_text({}) == "none"
    assert device_facts.spool_text({"events": 1, "samples": 0}) == "1 events"
