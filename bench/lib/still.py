"""Wait until a counter stops moving: the relay's writer or the sink has caught up."""
from __future__ import annotations

import time
from typing import Callable


def wait_until_still(read: Callable[[], int], *, quiet: float, limit: float, poll: float) -> tuple[int, float]:
    """Poll `read` until its value has not changed for `quiet` seconds (at most `limit`);
    returns (last value, seconds waited)."""
    t0 = time.monotonic()
    last, since = read(), t0
    while time.monotonic() - t0 < limit:
        time.sleep(poll)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last, round(time.monotonic() - t0, 1)
