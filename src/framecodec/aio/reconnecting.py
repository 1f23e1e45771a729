"""framecodec.aio's opt-in reconnect: ``open_connection(...,
reconnect=Backoff(...), on_reconnect=hook)``.

The same rules as the blocking client's (net/backoff.py): what was in
flight when the connection was lost is never sent again (those calls raise
ConnectionClosed, or the error met), the next call reconnects first, one
round of attempts as the Backoff says, planned by the same sans-IO Round;
here the waits are asyncio.sleep and the attempts open_connection's own
connect steps (TCP, Unix, TLS).  The connection object stays the same: it
is the asyncio protocol of each new transport in turn, its per-connection
state made anew for each.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Optional, cast

from ..errors import ConnectionClosed
from ..net.addresses import Address
from ..net.backoff import Backoff, Reconnected, Round, as_lost, logger
from ..net.protocols import Protocol
from ..net.types import ItemT
from .connection import Connection

__all__ = ["AioReconnectHook", "Opener", "ReconnectingConnection"]

# on_reconnect(connection, Reconnected): a plain function, or a coroutine
# function (awaited before the call that reconnected goes on).
AioReconnectHook = Callable[[Connection[Any], Reconnected], Optional[Awaitable[None]]]
# open_connection's connect steps: a transport for the factory's protocol,
# within the timeout (None: no limit).
Opener = Callable[[Callable[[], Connection[Any]], Optional[float]], Awaitable[Connection[Any]]]


class ReconnectingConnection(Connection[ItemT]):
    """A Connection that reconnects on the call after the one that found
    it lost (made by open_connection with ``reconnect=``).

    ``reconnects`` counts the new connections.  close() and abort() end
    it for good: no call reconnects after them, and a round under way
    stops at its next step (a wait ends at once).
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        high_water: int,
        address: Address,
        policy: Backoff,
        opener: Opener,
        timeout: Optional[float],
        on_reconnect: Optional[AioReconnectHook],
    ) -> None:
        super().__init__(protocol, high_water=high_water, address=address)
        self._policy: Optional[Backoff] = policy  # None once a round gave up
        self._opener = opener
        self._timeout = timeout
        self._on_reconnect = on_reconnect
        # The error that ended the connection is raised once (_reported);
        # the call after that reconnects.
        self._reported = False
        self._closed_by_user = False
        self._woken = self._loop.create_future()  # done at close(): a round's wait ends
        # One round at a time; calls from other tasks wait for it and its
        # hook (a login...) before they go on.
        self._round = asyncio.Lock()
        self._hook_task: Optional[asyncio.Task[Any]] = None  # the task running on_reconnect
        self.reconnects = 0
        """How many times this connection has reconnected."""

    # -- the calls: each first raises the loss once, or reconnects ----------------------
    # The checks in line keep a call on a live connection to one coroutine
    # more than Connection's own.  Connection's overloads type the calls by
    # ItemT; here they pass through as they are (cast: their self types
    # name one ItemT each).

    async def send(self, item: Any, **options: Any) -> None:
        if self._round.locked() or self._lost_for_now():
            await self._resume(sending=True)
        try:
            await cast(Any, super()).send(item, **options)
        except BaseException:
            self._note_reported()
            raise

    async def send_many(self, items: Any) -> None:
        if self._round.locked() or self._lost_for_now():
            await self._resume(sending=True)
        try:
            await cast(Any, super()).send_many(items)
        except BaseException:
            self._note_reported()
            raise

    async def request(self, item: Any, **options: Any) -> Any:
        if self._round.locked() or self._lost_for_now():
            await self._resume(sending=True)
        try:
            return await cast(Any, super()).request(item, **options)
        except BaseException:
            self._note_reported()
            raise

    async def recv(self) -> ItemT:
        if not self._frames and (self._round.locked() or self._lost_for_now()):
            await self._resume(sending=False)
        try:
            return await super().recv()
        except BaseException:
            self._note_reported()
            raise

    async def close(self, timeout: Optional[float] = 5.0) -> None:
        self._stop_reconnecting()
        await super().close(timeout)

    def abort(self) -> None:
        self._stop_reconnecting()
        super().abort()

    def _stop_reconnecting(self) -> None:
        self._closed_by_user = True
        if not self._woken.done():
            self._woken.set_result(None)

    def _note_reported(self) -> None:
        """A call raised: if the connection is lost, that was its one report."""
        if self._error is not None:
            self._reported = True

    def _set_error(self, exc: BaseException) -> None:
        if self._error is None and self._policy is not None and not self._closed_by_user:
            exc = as_lost(exc, self.address)
            logger.info("%s: connection lost: %s; the next call reconnects", self.address, exc)
            # The calls waiting now are told: that is the loss reported.
            self._reported = any(not waiter.done() for waiter, _ in self._waiters)
        super()._set_error(exc)

    def _lost_for_now(self) -> bool:
        return self._error is not None or self._transport is None or self._transport.is_closing()

    async def _resume(self, *, sending: bool) -> None:
        """Before a call: nothing while connected; else raise the loss (once),
        or reconnect.  Frames of the lost connection are received first: a
        reply on a new connection could pass for theirs, so a send meanwhile
        is refused."""
        in_hook = self._hook_task is not None and asyncio.current_task() is self._hook_task
        if self._round.locked() and not in_hook:
            async with self._round:
                pass  # a round under way: this call comes after it and its hook
        if not self._lost_for_now() or self._policy is None or self._closed_by_user or in_hook:
            return  # Connection's own checks raise what there is to raise
        if self._error is not None and not self._reported:
            self._reported = True
            if sending:
                raise ConnectionClosed(f"the connection was lost: {self._error}") from self._error
            raise self._error
        if self._frames:
            raise ConnectionClosed(
                f"{len(self._frames)} frames of the lost connection are still to be received"
            )
        async with self._round:
            if self._policy is None and self._error is not None:
                raise self._error  # the round this call waited for gave up
            if self._lost_for_now() and not self._closed_by_user:
                await self._reconnect()

    # -- one round ----------------------------------------------------------------------

    async def _reconnect(self) -> None:
        assert self._policy is not None and self.address is not None
        cause = self._error if self._error is not None else ConnectionClosed("closed")
        await self._let_go()
        plan = Round(self._policy, where=self.address, timeout=self._timeout)
        try:
            while True:
                delay = plan.next_wait()
                closed = await self._wait(delay) if delay > 0 else self._closed_by_user
                if closed:
                    raise ConnectionClosed(
                        f"the connection was closed while reconnecting to {self.address}"
                    )
                limit = plan.attempt_timeout()
                await self._let_go()  # a transport a cut-short attempt left
                self._renew()
                try:
                    await self._opener(lambda: self, limit)
                except BaseException as exc:
                    if plan.worth_retrying(exc):
                        continue
                    raise
                break
            attempts, elapsed = plan.connected(cause)
            if self._closed_by_user:  # close() came while connecting
                await self._let_go()
                raise ConnectionClosed("the connection was closed while reconnecting")
        except asyncio.CancelledError:
            # The caller was cancelled, not the round lost: the next call
            # starts a new one.
            await self._let_go()
            self._error, self._reported = cause, True
            raise
        except BaseException as exc:
            # Given up (or a certificate refused): closed for good.
            await self._let_go()
            self._policy = None
            self._error, self._reported = exc, True
            raise
        self.reconnects += 1
        if self._on_reconnect is not None:
            await self._call_hook(Reconnected(self.address, attempts, elapsed, cause))

    async def _call_hook(self, event: Reconnected) -> None:
        assert self._on_reconnect is not None
        self._hook_task = asyncio.current_task()
        try:
            outcome = self._on_reconnect(self, event)
            if inspect.isawaitable(outcome):
                await outcome
        except BaseException as exc:
            # Its exchange (a login...) failed: the next call reconnects.
            if self._error is None:
                self._set_error(exc)
            self._reported = True
            await self._let_go()
            raise
        finally:
            self._hook_task = None

    async def _wait(self, delay: float) -> bool:
        """asyncio.sleep(delay), cut short by close(): True if closed meanwhile."""
        sleep = asyncio.ensure_future(asyncio.sleep(delay))
        try:
            await asyncio.wait((sleep, self._woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
        return self._closed_by_user

    async def _let_go(self) -> None:
        """Wait until the old transport is gone, aborting it if it lingers,
        so that none of its callbacks reaches the state made for the next."""
        transport = self._transport
        if transport is None or self._lost.done():
            return
        transport.abort()
        await asyncio.shield(self._lost)

    def _renew(self) -> None:
        """Per-connection state as for a new connection (the decoder, the
        queues, the state); this class's own fields are kept."""
        Connection.__init__(self, self.protocol, high_water=self.high_water, address=self.address)
