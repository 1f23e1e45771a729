"""framecodec.anyio's rows: anyio_roles' coroutines on each anyio backend
(asyncio, trio), each on an event loop of its own, beside framecodec.aio's."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, List, Optional, Tuple

from .base import BATCH_BYTES, Contender, EchoClient, Endpoint, Receiver, Sender, ThreadedEchoServer

__all__ = ["CONTENDERS"]


def _run(backend: str, role: str, *args: Any, **options: Any) -> Any:
    import functools

    import anyio

    from . import anyio_roles

    return anyio.run(
        functools.partial(getattr(anyio_roles, role), *args, **options), backend=backend
    )


class AnyioReceiver(Receiver):
    def __init__(self, endpoint: Endpoint, size: int, backend: str) -> None:
        self.backend = backend
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def receive(self, count: int) -> Tuple[int, float]:
        received: Tuple[int, float] = _run(self.backend, "receive_frames", self._bound.sock, count)
        return received

    def close(self) -> None:
        self._bound.close()


class AnyioSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes, backend: str) -> None:
        self.backend = backend
        self.address = address
        self.payload = payload

    def send(self, count: int) -> Optional[float]:
        start: float = _run(
            self.backend,
            "send_frames",
            self.address,
            self.payload,
            count,
            batch_bytes=BATCH_BYTES,
        )
        return start


class AnyioEchoServer(ThreadedEchoServer):
    def __init__(self, endpoint: Endpoint, backend: str) -> None:
        super().__init__()
        self.backend = backend
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def start(self, clients: int) -> None:
        self._spawn(_run, self.backend, "serve_echo", self._bound.sock, clients)

    def close_listener(self) -> None:
        self._bound.close()


class AnyioEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes, backend: str) -> None:
        self.backend = backend
        self.address = address
        self.payload = payload

    def latencies(self, rounds: int, warmup: int, budget: float) -> List[float]:
        samples: List[float] = _run(
            self.backend, "request_latencies", self.address, self.payload, rounds, warmup, budget
        )
        return samples


@dataclasses.dataclass(frozen=True)
class AnyioContender(Contender):
    """Needs anyio, and for the trio row trio too."""

    backend: str = "asyncio"

    def available(self) -> Optional[str]:
        for module in ("anyio", self.backend):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'framecodec[bench]')"
        return None


def _contender(backend: str) -> Contender:
    return AnyioContender(
        f"anyio-{backend}",
        f"framecodec.anyio ({backend})",
        lambda e, size: AnyioReceiver(e, size, backend),
        lambda e, address, payload: AnyioSender(e, address, payload, backend),
        lambda e: AnyioEchoServer(e, backend),
        lambda e, address, payload: AnyioEchoClient(e, address, payload, backend),
        backend=backend,
    )


CONTENDERS: List[Contender] = [_contender("asyncio"), _contender("trio")]
