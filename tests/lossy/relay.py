"""A lossy packet relay between two TUN devices (this kernel has no netem).

The relay opens /dev/net/tun twice (TUNSETIFF, IFF_TUN | IFF_NO_PI: one
raw IP packet per read or write), one device for each side of a link, and
forwards every IP packet read from one device to the other after applying
``Impairments``: a delay with jitter, drops, reordering, duplicates, and
corruption, either the kind TCP's (or UDP's) checksum catches or, in
``undetected`` mode, payload bytes of TCP segments flipped with the TCP
checksum recomputed, as a faulty middlebox would.  Every decision comes from
one seeded random generator, and every decision is counted in ``stats``.

One thread runs the relay: a selector on both devices and a heap of packets
waiting for their delivery time.  The devices vanish when it closes them
(they are not persistent).  link.py puts each device in a network namespace
of its own; this module knows nothing of namespaces.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import heapq
import itertools
import os
import random
import selectors
import struct
import threading
import time
from typing import Counter, Dict, List, Optional, Tuple

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
MAX_QUEUED = 20_000  # packets waiting for their delivery time; past it new ones are dropped
READS_PER_WAKEUP = 256  # so one busy side cannot starve the other or the deliveries


@dataclasses.dataclass
class Impairments:
    """What the relay does to each packet, each direction alike.

    Rates are probabilities per packet, decided in this order: drop; else
    corrupt (checksum-caught; of IPv4 TCP and UDP packets) or undetected
    corruption (of TCP segments with payload); then duplicate; then
    reorder.  ``delay`` and ``jitter`` are
    seconds: each packet waits delay +- jitter (uniform), but no earlier
    than the packet before it in its direction, so jitter alone never
    reorders; a packet picked for reordering waits ``reorder_gap`` more and
    is overtaken by the packets that follow it in that time.
    """

    delay: float = 0.020
    jitter: float = 0.005
    drop: float = 0.02
    reorder: float = 0.05
    reorder_gap: float = 0.010
    duplicate: float = 0.01
    corrupt: float = 0.001
    undetected: float = 0.0
    seed: int = 13

    def describe(self) -> str:
        return (
            f"delay {self.delay * 1000:g}+-{self.jitter * 1000:g} ms, drop {self.drop:.1%}, "
            f"reorder {self.reorder:.1%} (+{self.reorder_gap * 1000:g} ms), "
            f"duplicate {self.duplicate:.1%}, corrupt {self.corrupt:.2%}, "
            f"undetected corruption {self.undetected:.2%}, seed {self.seed}"
        )


def open_tun(name: str) -> int:
    """A non-blocking descriptor of a new TUN device ``name`` (no packet info)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- checksums and corruption -----------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's complement of the one's complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_layout(packet: bytes) -> Optional[Tuple[int, int, int]]:
    """(protocol, transport header offset, payload offset) of an unfragmented
    IPv4 TCP or UDP packet, or None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    flags_fragment = struct.unpack_from("!H", packet, 6)[0]
    if flags_fragment & 0x3FFF:  # a fragment: its transport header is elsewhere
        return None
    proto = packet[9]
    if proto == 6 and len(packet) >= ihl + 20:
        return proto, ihl, ihl + (packet[ihl + 12] >> 4) * 4
    if proto == 17 and len(packet) >= ihl + 8:
        return proto, ihl, ihl + 8
    return None


def tcp_checksum(packet: bytearray, ihl: int) -> int:
    """The TCP checksum ``packet`` should carry (its own field counted as zero)."""
    segment = bytearray(packet[ihl:])
    segment[16:18] = b"\x00\x00"
    pseudo = bytes(packet[12:20]) + struct.pack("!BBH", 0, 6, len(segment))
    return internet_checksum(pseudo + bytes(segment))


def has_tcp_payload(packet: bytes, layout: Optional[Tuple[int, int, int]]) -> bool:
    return layout is not None and layout[0] == 6 and layout[2] < len(packet)


def flip_byte(
    packet: bytes, layout: Tuple[int, int, int], rng: random.Random, undetected: bool
) -> bytes:
    """``packet`` (of ``layout``, from ipv4_layout) with transport bytes changed.

    Checksum-caught: one byte of the transport header or payload (never the
    IP header, which has its own checksum) XORed with a non-zero value; a
    single changed byte always changes the one's complement sum, so TCP and
    UDP discard the packet.  Undetected (TCP segments with payload only): one
    to four payload bytes changed and the TCP checksum recomputed, so the
    stack accepts the segment.
    """
    _, ihl, payload = layout
    mutated = bytearray(packet)
    if not undetected:
        mutated[rng.randrange(ihl, len(packet))] ^= rng.randrange(1, 256)
        return bytes(mutated)
    for _ in range(rng.randint(1, 4)):
        mutated[rng.randrange(payload, len(packet))] ^= rng.randrange(1, 256)
    mutated[ihl + 16 : ihl + 18] = struct.pack("!H", tcp_checksum(mutated, ihl))
    return bytes(mutated)


# -- the relay ----------------------------------------------------------------------


class Relay:
    """Forwards IP packets between two TUN devices through ``impairments``.

    ``start()`` runs it in a thread, ``close()`` stops the thread and closes
    both devices (also as a context manager).  ``stats`` counts, per
    direction and in total: received, delivered, dropped, corrupted,
    undetected, duplicated, reordered, overflow.  ``impairments`` may be
    replaced while running (the next packet sees the new one).
    """

    def __init__(self, names: Tuple[str, str], impairments: Impairments) -> None:
        self.names = names
        self.impairments = impairments
        self.rng = random.Random(impairments.seed)
        self.stats: Counter[str] = collections.Counter()
        self._fds: List[int] = []
        try:
            for name in names:
                self._fds.append(open_tun(name))
        except BaseException:
            self._close_fds()
            raise
        self._queue: List[Tuple[float, int, int, bytes]] = []
        self._order = itertools.count()
        self._last_due: Dict[int, float] = {fd: 0.0 for fd in self._fds}
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._selector: Optional[selectors.BaseSelector] = None
        self.error: Optional[BaseException] = None

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Relay:
        # Made here, not in the thread: it exists once start() returns.
        self._selector = selectors.DefaultSelector()
        a, b = self._fds
        self._selector.register(a, selectors.EVENT_READ, b)
        self._selector.register(b, selectors.EVENT_READ, a)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(10.0)
            if self._thread.is_alive():
                raise RuntimeError("the relay thread did not stop")
            self._thread = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._close_fds()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.error is not None:
            raise RuntimeError("the relay failed") from self.error

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping:
                timeout = None
                if self._queue:
                    timeout = max(0.0, self._queue[0][0] - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.data is not None:
                        self._read(key.fd, key.data)
                self._deliver()
        except BaseException as exc:  # kept for close() to raise
            self.error = exc

    def _read(self, source: int, target: int) -> None:
        direction = "ab" if source == self._fds[0] else "ba"
        for _ in range(READS_PER_WAKEUP):
            try:
                packet = os.read(source, MAX_PACKET)
            except BlockingIOError:
                return
            self._impair(packet, target, direction)

    def _impair(self, packet: bytes, target: int, direction: str) -> None:
        imp, rng = self.impairments, self.rng
        self._count(direction, "received")
        if rng.random() < imp.drop:
            self._count(direction, "dropped")
            return
        layout = ipv4_layout(packet)
        if layout is not None and imp.corrupt and rng.random() < imp.corrupt:
            packet = flip_byte(packet, layout, rng, undetected=False)
            self._count(direction, "corrupted")
        elif has_tcp_payload(packet, layout) and imp.undetected and rng.random() < imp.undetected:
            packet = flip_byte(packet, layout, rng, undetected=True)
            self._count(direction, "undetected")
        copies = 1
        if rng.random() < imp.duplicate:
            copies = 2
            self._count(direction, "duplicated")
        now = time.monotonic()
        due = now + imp.delay + rng.uniform(-imp.jitter, imp.jitter)
        if rng.random() < imp.reorder:
            # Held back past the packets that follow; the order of the others stands.
            due = max(due, self._last_due[target]) + imp.reorder_gap
            self._count(direction, "reordered")
        else:
            due = max(due, self._last_due[target])
            self._last_due[target] = due
        for _ in range(copies):
            if len(self._queue) >= MAX_QUEUED:
                self._count(direction, "overflow")
                return
            heapq.heappush(self._queue, (due, next(self._order), target, packet))

    def _deliver(self) -> None:
        queue = self._queue
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, target, packet = heapq.heappop(queue)
            try:
                os.write(target, packet)
            except OSError:  # the device is down or its namespace went away
                self.stats["write_errors"] += 1
                continue
            self._count("ab" if target == self._fds[1] else "ba", "delivered")

    def _count(self, direction: str, what: str) -> None:
        self.stats[what] += 1
        self.stats[f"{direction}_{what}"] += 1
