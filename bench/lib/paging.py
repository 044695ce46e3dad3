"""The message list at 100,000 mails (issue 13: keyset paging stays fast): one user's
100,000 messages written straight into a SQLite store, then the best of 5 of page 1, page
1,000 and page 1,960 by cursor and by OFFSET, and a search. Milliseconds per page of 51.

  .venv/bin/python bench/lib/paging.py
"""
import asyncio
import sqlite3
import tempfile
import time

from relay.store import open_store

async def main():
    d = tempfile.mkdtemp()
    store = open_store(f"sqlite:///{d}/r.db"); await store.open()
    u = await store.add_user("a@x.org", "h"); await store.close()
    c = sqlite3.connect(f"{d}/r.db")
    c.executemany("INSERT INTO messages (id, queue_id, user_id, mail_from, message_id, subject, size, received_at, client_ip, track_opens, track_clicks, status) VALUES (?,?,?,?,?,?,?,?,?,1,1,'sent')",
                  [(i, f"Q{i}", u.id, "a@x.org", f"<{i}@x>", f"Subject {i}", 100, 1.7e9 + i, "1.2.3.4") for i in range(1, 100001)])
    c.executemany("INSERT INTO recipients (message_id, address, status) VALUES (?,?, 'sent')", [(i, f"r{i}@y.org") for i in range(1, 100001)])
    c.commit(); c.close()
    store = open_store(f"sqlite:///{d}/r.db"); await store.open()
    async def t(**kw):
        best = 1e9
        for _ in range(5):
            s = time.perf_counter(); r = await store.message_reports(u.id, limit=51, **kw); best = min(best, time.perf_counter() - s)
        return best * 1000, len(r)
    print("first page", await t())
    print("page 1000 by cursor", await t(before=(1.7e9 + 50001, 50001)))
    print("page 1000 by offset", await t(offset=50000))
    print("page 1960 by cursor", await t(before=(1.7e9 + 1001, 1001)))
    print("page 1960 by offset", await t(offset=99000))
    print("search", await t(search="r99999@"))
    await store.close()
asyncio.run(main())
