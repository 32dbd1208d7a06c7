"""When a delivery may go: retry backoff (``RetryPolicy``, tenacity's strategies, pure) and per
receiver spacing of sends (``RateLimiter``). The dispatcher (delivery.py) applies both."""

from __future__ import annotations

import asyncio
import time

from tenacity import RetryCallState, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from bridge.config import RetryConfig


class RetryPolicy:
    """When to try a failed job again, or None to give up. Pure: tenacity's strategies, no sleeping."""

    def __init__(self, cfg: RetryConfig) -> None:
        self._wait = wait_exponential_jitter(
            multiplier=cfg.initial_backoff, max=cfg.max_backoff, jitter=cfg.initial_backoff
        )
        self._stop = stop_after_attempt(cfg.max_attempts) | stop_after_delay(cfg.max_elapsed)
        self._max_elapsed = cfg.max_elapsed

    def next_delay(self, attempts: int, elapsed: float, retry_after: float | None) -> float | None:
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempts
        state.start_time = 0.0
        state.outcome_timestamp = elapsed
        if self._stop(state):
            return None
        delay = self._wait(state)
        if retry_after is not None:
            delay = max(delay, retry_after)  # the peer said when; never earlier
        if elapsed + delay > self._max_elapsed:
            return None
        return delay


class RateLimiter:
    """Spaces sends at least 1/rate apart; ``pause`` holds the receiver (a 429's Retry-After)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    def wait_bound(self, sends: int) -> float:
        """At most how long the next ``sends`` acquires wait, unless a ``pause`` comes first."""
        return max(0.0, self._next - time.monotonic()) + sends * self._interval

    def pause(self, seconds: float) -> None:
        self._next = max(self._next, time.monotonic() + seconds)

    async def acquire(self) -> None:
        if not self._interval and not self._lock.locked() and self._next <= time.monotonic():
            return  # unlimited and not paused: nothing to wait for, nothing to record
        async with self._lock:
            now = time.monotonic()
            while self._next > now:  # a loop: a pause may come while waiting
                await asyncio.sleep(self._next - now)
                now = time.monotonic()
            self._next = now + self._interval
