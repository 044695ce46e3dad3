"""A rewrite worker process (started by relay.rewrite_pool): frames in on stdin, out on stdout.

Each frame is its length (8 bytes, big-endian) and a pickle: (raw message, plans) in,
the list of RewriteResult out, in the order the calls came. The pipe is private to
the relay, which started this process; EOF on stdin ends it.
"""
from __future__ import annotations

import os
import pickle
import sys
from typing import BinaryIO

from relay.rewrite import rewrite_copies
from relay.rewrite_pool import HEADER, frame


def serve(calls: BinaryIO, answers: BinaryIO) -> None:
    while True:
        head = calls.read(HEADER)
        if len(head) < HEADER:
            return
        raw, plans = pickle.loads(calls.read(int.from_bytes(head, "big")))
        answers.write(frame(rewrite_copies(raw, plans)))
        answers.flush()


def main() -> None:
    # the answers get a private copy of stdout; anything else printed goes to stderr
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        serve(sys.stdin.buffer, answers)
    except KeyboardInterrupt:  # Ctrl-C in a terminal reaches the whole process group
        pass


if __name__ == "__main__":
    main()
