"""The relay itself: it drops, duplicates, reorders and corrupts at the
rates it is given, counted on both sides (its own counts and what a
receiver in the other namespace saw), and its undetected corruption gets
past TCP's checksum while its ordinary corruption does not."""

from __future__ import annotations

import math

import pytest

from . import link as lossy
from .relay import Impairments, internet_checksum
from .scenarios import datagrams, frames, late_arrivals, stream

pytestmark = pytest.mark.skipif(lossy.skip_reason() is not None, reason=lossy.skip_reason() or "")

DATAGRAMS = 5000


def near(count: int, total: int, rate: float) -> bool:
    """``count`` of ``total`` is within 4.5 standard deviations of ``rate``."""
    spread = 4.5 * math.sqrt(total * rate * (1 - rate)) + 2
    return abs(count - total * rate) <= spread


def test_the_internet_checksum_of_a_known_header():
    # RFC 1071's example words; and a header with its checksum sums to zero.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    checksum = internet_checksum(header)
    assert checksum == 0xB861
    assert internet_checksum(header[:10] + checksum.to_bytes(2, "big") + header[12:]) == 0


def test_the_relay_drops_duplicates_and_reorders_at_its_rates(no_leaks, make_link, lossy_report):
    impairments = Impairments()  # 20+-5 ms, drop 2 %, reorder 5 %, duplicate 1 %, corrupt 0.1 %
    link = make_link(impairments, rate=None)
    record, relay = datagrams(link, DATAGRAMS)
    seqs = record["seqs"]
    received = relay["received"]
    # The relay read (almost) all of them: the TUN device's queue did not overflow.
    assert received >= 0.9 * DATAGRAMS, relay
    assert near(relay.get("dropped", 0), received, impairments.drop), relay
    assert near(relay.get("duplicated", 0), received, impairments.duplicate), relay
    assert near(relay.get("reordered", 0), received, impairments.reorder), relay
    assert relay.get("corrupted", 0) <= 20, relay
    # What the receiver saw matches what the relay did, packet for packet:
    # the missing were dropped or corrupted (UDP's checksum discards those),
    # no corrupted payload reached it.
    late, repeated = late_arrivals(seqs)
    unique = len(set(seqs))
    corrupted = relay.get("corrupted", 0)
    assert unique == received - relay.get("dropped", 0) - corrupted, (unique, relay)
    assert record["bad"] == 0
    assert relay["duplicated"] - corrupted <= repeated <= relay["duplicated"], (repeated, relay)
    # A packet held back is late unless it was the last or its checksum failed.
    assert relay["reordered"] - corrupted - 2 <= late <= relay["reordered"], (late, relay)
    assert near(late, unique, impairments.reorder)
    lossy_report.append(
        f"relay, {DATAGRAMS} datagrams: {relay['received']} relayed, "
        f"{relay.get('dropped', 0)} dropped, {repeated} duplicates seen, {late} late, "
        f"{corrupted} corrupted"
    )


def test_corruption_the_checksum_catches_never_reaches_the_application(no_leaks, make_link):
    impairments = Impairments(drop=0, reorder=0, duplicate=0, corrupt=0.05, seed=5)
    link = make_link(impairments, rate=None)
    record, relay = datagrams(link, 2000)
    assert near(relay["corrupted"], relay["received"], impairments.corrupt), relay
    assert len(set(record["seqs"])) == relay["received"] - relay["corrupted"]
    assert record["bad"] == 0
    # TCP discards them too and sends again: the stream arrives intact.
    result, relay = stream(link, 256 * 1024)
    assert relay["corrupted"] > 0, relay
    assert result == {"received": 256 * 1024, "differing_bytes": 0, "intact": True}


def test_undetected_corruption_gets_past_tcp(no_leaks, make_link):
    impairments = Impairments(drop=0, reorder=0, duplicate=0, corrupt=0, undetected=0.05, seed=7)
    link = make_link(impairments, rate=None)
    result, relay = stream(link, 256 * 1024)
    # The checksum was right, so TCP delivered the changed bytes (1-4 per segment).
    assert relay["undetected"] > 0, relay
    assert result["received"] == 256 * 1024
    assert not result["intact"]
    assert 0 < result["differing_bytes"] <= 4 * relay["undetected"], (result, relay)


@pytest.mark.skipif(lossy.heavy_skip_reason() is not None, reason=lossy.heavy_skip_reason() or "")
def test_undetected_corruption_reaches_framecodec_frames(no_leaks, make_link, lossy_report):
    # What a frame checksum is for: the application's sha256 sees changed
    # frames (or a changed length header derails the stream) that TCP passed.
    impairments = Impairments(undetected=0.01, seed=11)
    link = make_link(impairments)
    result = frames(link, "selector", None, count=400, max_size=64 * 1024, budget=512 * 1024,
                    timeout=5, deadline=60)  # fmt: skip
    assert result["relay"].get("undetected", 0) > 0, result
    assert not result["ok"], result
    assert result["errors"] or result["server"].get("errors") or result["error"], result
    lossy_report.append(
        f"undetected corruption ({result['relay']['undetected']} segments changed): "
        f"{result['received']} of {result['frames']} frames checked before "
        f"{(result['errors'] or result['server'].get('errors') or [result['error']])[0]}"
    )
