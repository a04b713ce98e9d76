"""Brute-force protection of logins: failed attempts counted per user name and per client address in moving
windows (the `limits` library); past either limit, logins answer 429 with Retry-After, even with the right
password, until the window has moved on. Counted in this process's memory: with ``--workers N`` each worker
counts on its own, so the limits are per worker."""

from __future__ import annotations

import time

from limits import parse, storage, strategies

PER_USER = "5/15 minutes"  # failed logins of one user name
PER_CLIENT = "20/15 minutes"  # failed logins from one address, whatever the names


class LoginGuard:
    def __init__(self, per_user: str = PER_USER, per_client: str = PER_CLIENT) -> None:
        self.window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self.limits = ((parse(per_user), "user"), (parse(per_client), "client"))

    def retry_after(self, name: str, client: str) -> int | None:
        """Seconds to wait before the next attempt, or None when one may be made now."""
        for (item, kind), key in zip(self.limits, (name, client), strict=True):
            if not self.window.test(item, "login", kind, key):
                stats = self.window.get_window_stats(item, "login", kind, key)
                return max(1, int(stats.reset_time - time.time()) + 1)
        return None

    def failed(self, name: str, client: str) -> None:
        for (item, kind), key in zip(self.limits, (name, client), strict=True):
            self.window.hit(item, "login", kind, key)
