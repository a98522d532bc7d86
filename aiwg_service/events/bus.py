"""The event bus: typed events, wildcard subscriptions, retries, a dead-letter queue and history.

Every subscriber has its own bounded queue and its own worker task, so a slow or failing subscriber
never blocks the publisher or the other subscribers. ``publish`` is synchronous and never waits.
A handler that raises is retried with exponential backoff (1 s, 2 s, 4 s, jittered) without holding up the
events behind it; after the last retry the event and the error go to the dead-letter queue, which is
persisted so that it survives a restart, and can be listed and replayed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from .. import looplag
from ..protocol import Event, utc_now
from .deadletters import DeadLetterJournal
from .history import FRAME_HEAD, FRAME_TAIL, MAX_BYTES, MAX_EVENTS, History, Kept, SeqFile

log = logging.getLogger("aiwg.bus")

Handler = Callable[[Event], Awaitable[None] | None]
HISTORY = MAX_EVENTS
DLQ_MAX = 1000
RETRY_DELAYS = (1.0, 2.0, 4.0)


_counter = itertools.count()
_probe = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_new_kept = tuple.__new__  # a Kept from a tuple without NamedTuple's Python-level constructor (publish is hot)


class Follower:
    """What the bus asks of a reader of its history (``events.subscribe``): to be told there is more, and
    where it stands. ``prompt`` followers pin what they have not read yet (see ``History.trim``)."""

    cursor: int

    def wake(self) -> None: ...

    @property
    def prompt(self) -> bool: ...


class EventView:
    """The history as ``Event`` objects, decoded on demand (for ``trace.get``; followers read frames)."""

    def __init__(self, history: History) -> None:
        self._h = history

    def __len__(self) -> int:
        return len(self._h)

    def __iter__(self) -> Iterator[Event]:
        return (_event_decoder.decode(k.raw) for k in self._h)

    def __reversed__(self) -> Iterator[Event]:
        return (_event_decoder.decode(k.raw) for k in reversed(self._h))


def wire_safe(obj: Any) -> Any:
    """``obj`` with every string that is not valid UTF-8 (surrogate escapes) rendered with U+FFFD.

    Sources that carry file names keep the raw bytes themselves (``*_b64``); this is the bus's guarantee
    that no event can make history, the DLQ, a follower or a rule's JSON fail to encode.
    """
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(obj, dict):
        return {wire_safe(k): wire_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [wire_safe(v) for v in obj]
    return obj


def new_event_id() -> str:
    """Sortable and unique within a process lifetime and across restarts: ms timestamp + counter."""
    return f"ev-{time.time_ns() // 1_000_000:011x}-{next(_counter) & 0xFFFFF:05x}"


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """``*`` matches all, ``file.*`` a prefix, other globs via a regex; otherwise exact."""
    if pattern in ("*", "**", ""):
        return lambda _t: True
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        return pattern.__eq__
    if pattern.endswith(".*") and not any(c in pattern[:-2] for c in "*?["):
        prefix = pattern[:-1]
        return lambda t: t.startswith(prefix)
    if pattern.count("*") + pattern.count("?") <= 2:
        rx = re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))
        return lambda t: rx.fullmatch(t) is not None
    # Many wildcards: a client's pattern such as ``*?*?*?*?*?*?*?*?*?*?z`` sends a regex into catastrophic
    # backtracking (a quarter second per event, and events.list tries 1,000). This matcher is O(len * len).
    return lambda t: _wildcard_match(pattern, t)


def _wildcard_match(p: str, s: str) -> bool:
    """``*`` and ``?`` glob match without backtracking blow-up: on a mismatch, only the last ``*`` retries."""
    i = j = 0
    star = -1
    mark = 0
    while i < len(s):
        if j < len(p) and (p[j] == "?" or p[j] == s[i]):
            i += 1
            j += 1
        elif j < len(p) and p[j] == "*":
            star, mark = j, i
            j += 1
        elif star >= 0:
            j = star + 1
            mark += 1
            i = mark
        else:
            return False
    while j < len(p) and p[j] == "*":
        j += 1
    return j == len(p)


class Subscription:
    """One subscriber: a pattern, a handler, and the bounded queue in front of it."""

    def __init__(self, bus: EventBus, pattern: str, handler: Handler, name: str, max_queue: int,
                 retries: int) -> None:
        self.bus = bus
        self.pattern = pattern
        self.matches = compile_pattern(pattern)
        self.handler = handler
        self.name = name
        self.max_queue = max_queue
        self.retries = retries
        self.is_async = inspect.iscoroutinefunction(handler)
        self.queue: deque[tuple[Event, int]] = deque()
        self.wake = asyncio.Event()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None

    def offer(self, event: Event, attempt: int = 0) -> None:
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            self.bus.dropped += 1
            if self.dropped in (1, 10, 100, 1000) or self.dropped % 10000 == 0:
                log.warning("subscriber %s is falling behind: %d events dropped (queue of %d full)",
                            self.name, self.dropped, self.max_queue)
            return
        self.queue.append((event, attempt))
        if not self.wake.is_set():
            self.wake.set()

    async def run(self) -> None:
        q = self.queue
        while True:
            if not q:
                self.wake.clear()
                await self.wake.wait()
                continue
            event, attempt = q.popleft()
            try:
                if self.is_async:
                    await self.handler(event)  # type: ignore[misc]
                else:
                    res = self.handler(event)
                    if inspect.isawaitable(res):
                        await res
                self.delivered += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(event, attempt, exc)
            if not self.is_async and (self.delivered & 0x3FF) == 0:
                await asyncio.sleep(0)  # let others run during a long burst

    def _failed(self, event: Event, attempt: int, exc: Exception) -> None:
        self.failed += 1
        if attempt < self.retries:
            delay = self.bus.retry_delays[min(attempt, len(self.bus.retry_delays) - 1)]
            delay *= 1 + random.uniform(-self.bus.jitter, self.bus.jitter)
            log.info("subscriber %s failed on %s (%s); retry %d in %.2fs", self.name, event.type, exc,
                     attempt + 1, delay)
            self.bus._later(delay, lambda: self.offer(event, attempt + 1))
        else:
            log.error("subscriber %s failed on %s %s after %d attempts: %s", self.name, event.type, event.id,
                      attempt + 1, exc, extra={"EVENT": event.type})
            self.bus.dead_letter(event, self.name, f"{type(exc).__name__}: {exc}", attempt + 1)


class DeadLetter(msgspec.Struct):
    id: str
    event: Event
    subscriber: str
    error: str
    attempts: int
    time: str


class EventBus:
    """The in-process pub/sub router; also the first subsystem to start and the last to stop."""

    name = "router"

    def __init__(self, dlq_path: Path | None = None, *, history: int = HISTORY, history_bytes: int = MAX_BYTES,
                 seq_path: Path | None = None, retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 jitter: float = 0.25) -> None:
        self.subs: list[Subscription] = []
        self.kept = History(history, history_bytes)
        self.history = EventView(self.kept)
        self.followers: set[Follower] = set()
        self.seqfile = SeqFile(seq_path)
        #: the last number of the previous run: followers resuming from before it lost what it held then
        self.kept.start_at(self.seqfile.load())
        self.dlq_path = dlq_path
        self.dlq: list[DeadLetter] = []
        self._dlq_file = DeadLetterJournal(dlq_path, DeadLetter, DLQ_MAX) if dlq_path is not None else None
        self.retry_delays = retry_delays
        self.jitter = jitter
        self.published = 0
        self.dropped = 0
        self.by_type: Counter[str] = Counter()
        self._timers: set[asyncio.TimerHandle] = set()
        self._started = False
        self._dlq_seq = itertools.count()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._load_dlq()
        self.seqfile.reserve(self.kept.last_seq)
        self._started = True
        for sub in self.subs:
            self._start_sub(sub)

    async def stop(self) -> None:
        self._started = False
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        tasks = [s.task for s in self.subs if s.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in self.subs:
            s.task = None
        if self._dlq_file is not None:
            await asyncio.to_thread(self._dlq_file.close)  # the letters queued for disk reach it
        self.seqfile.close(self.kept.last_seq)

    def apply(self, configs: Any) -> None:
        daemon = configs.service.daemon
        self.kept.max_events = daemon.event_history
        self.kept.max_bytes = daemon.event_history_bytes
        self.trim()

    def health(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "dead_letters": len(self.dlq),
            "queue_depth": sum(len(s.queue) for s in self.subs),
            "subscribers": len(self.subs),
            "followers": len(self.followers),
            "followers_behind": sum(1 for f in self.followers if f.cursor < self.kept.last_seq),
            "seq": self.kept.last_seq,
            "history": {"events": len(self.kept), "bytes": self.kept.bytes, "first_seq": self.kept.first_seq,
                        "evicted": self.kept.evicted, "max_events": self.kept.max_events,
                        "max_bytes": self.kept.max_bytes},
            "events_by_type": dict(self.by_type),
        }

    # -- publish / subscribe ---------------------------------------------------------------------------
    def publish(self, type: str, project: str | None = None, data: dict[str, Any] | None = None,
                source: str = "") -> Event:
        event = Event(new_event_id(), type, utc_now(), project, source, data if data is not None else {})
        return self.publish_event(event)

    def publish_event(self, event: Event) -> Event:
        """Number ``event``, keep it in the history, deliver it (made encodable first if a source slipped in a
        non-UTF-8 string); returns it."""
        looplag.poke()
        seq = self.kept.last_seq + 1
        event.seq = seq
        try:
            raw = _probe.encode(event)
        except UnicodeEncodeError:
            event = Event(event.id, wire_safe(event.type), event.time, wire_safe(event.project), event.source,
                          wire_safe(event.data), seq)
            raw = _probe.encode(event)
        if seq > self.seqfile.reserved:
            self.seqfile.reserve(seq)
        self.published += 1
        self.by_type[event.type] += 1
        kept = self.kept
        kept.append(_new_kept(Kept, (seq, event.id, event.time, event.type, event.project,
                                     FRAME_HEAD + raw + FRAME_TAIL)))
        if kept.bytes > kept.max_bytes or len(kept._items) - kept._head > kept.max_events:
            self.trim()
        t = event.type
        for sub in self.subs:
            if sub.matches(t):
                sub.offer(event)
        for f in self.followers:
            f.wake()
        return event

    # -- followers (readers of the history by sequence number) -------------------------------------------
    def follow(self, follower: Follower) -> None:
        self.followers.add(follower)

    def unfollow(self, follower: Follower) -> None:
        self.followers.discard(follower)
        if self.kept.over:
            self.trim()

    def trim(self) -> None:
        """Bound the history; what a prompt follower has yet to read stays (within ``PIN_FACTOR``)."""
        pinned = min((f.cursor for f in self.followers if f.prompt), default=None) if self.followers else None
        self.kept.trim(pinned)

    def subscribe(self, pattern: str, handler: Handler, *, name: str | None = None, max_queue: int = 10_000,
                  retries: int = 3) -> Subscription:
        sub = Subscription(self, pattern, handler, name or getattr(handler, "__qualname__", "subscriber"),
                           max_queue, retries)
        self.subs.append(sub)
        if self._started:
            self._start_sub(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.remove(sub)
        if sub.task is not None:
            sub.task.cancel()
            sub.task = None

    def _start_sub(self, sub: Subscription) -> None:
        if sub.task is None:
            sub.task = asyncio.get_running_loop().create_task(sub.run(), name=f"bus:{sub.name}")

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        if not self._started:
            return
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            fn()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    # -- history ---------------------------------------------------------------------------------------
    def query(self, pattern: str | None = None, project: str | None = None, since: str | int | None = None,
              limit: int = 100) -> list[Event]:
        """Matching events, oldest first (see ``query_kept``), as ``Event`` objects."""
        return [_event_decoder.decode(k.raw) for k in self.query_kept(pattern, project, since, limit)]

    def query_kept(self, pattern: str | None = None, project: str | None = None, since: str | int | None = None,
                   limit: int = 100) -> list[Kept]:
        """Matching retained events, oldest first: the newest ``limit``, or the first ``limit`` after ``since``
        (a sequence number, an event id or an ISO time), which is how a client pages forward."""
        match = compile_pattern(pattern) if pattern else None

        def wanted(k: Kept) -> bool:
            return (match is None or match(k.type)) and (project is None or k.project == project)

        out: list[Kept] = []
        if since is None:
            for k in reversed(self.kept):
                if wanted(k):
                    out.append(k)
                    if len(out) >= limit:
                        break
            out.reverse()
            return out
        if isinstance(since, int):
            source: Iterator[Kept] = self.kept.after(since)
        else:
            by_id = since.startswith("ev-")
            source = (k for k in self.kept if (k.id if by_id else k.time) > since)
        for k in source:
            if wanted(k):
                out.append(k)
                if len(out) >= limit:
                    break
        return out

    # -- dead letters ----------------------------------------------------------------------------------
    def dead_letter(self, event: Event, subscriber: str, error: str, attempts: int) -> None:
        dl = DeadLetter(f"dl-{time.time_ns() // 1000:x}-{next(self._dlq_seq)}", event, subscriber, error,
                        attempts, utc_now())
        self.dlq.append(dl)
        del self.dlq[:-DLQ_MAX]
        if self._dlq_file is not None:
            self._dlq_file.append(dl, self.dlq)

    def replay(self, dl_id: str) -> DeadLetter | None:
        """Deliver a dead letter again to its subscriber (or to everyone, if it is gone)."""
        for i, dl in enumerate(self.dlq):
            if dl.id == dl_id:
                del self.dlq[i]
                if self._dlq_file is not None:
                    self._dlq_file.drop(dl.id, self.dlq)
                targets = [s for s in self.subs if s.name == dl.subscriber]
                if targets:
                    for s in targets:
                        s.offer(dl.event)
                else:
                    self.publish_event(dl.event)
                return dl
        return None

    def _load_dlq(self) -> None:
        if self._dlq_file is not None:
            self.dlq = self._dlq_file.load()
