"""Numbered migrations of the SQLite store, run at start-up (PRAGMA user_version counts them)."""
from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: users, spool, tracking, hits
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE policies (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        mode TEXT NOT NULL,
        opens INTEGER NOT NULL,
        clicks INTEGER NOT NULL,
        notify INTEGER NOT NULL,
        sticky INTEGER NOT NULL,
        sticky_choice TEXT
    );
    CREATE TABLE sender_ips (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        ip TEXT NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (user_id, ip)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        queue_id TEXT NOT NULL UNIQUE,
        user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
        mail_from TEXT NOT NULL,
        message_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at REAL NOT NULL,
        client_ip TEXT NOT NULL,
        track_opens INTEGER NOT NULL,
        track_clicks INTEGER NOT NULL,
        is_dsn INTEGER NOT NULL DEFAULT 0,
        rewrite_note TEXT,
        status TEXT NOT NULL DEFAULT 'queued',
        sent_at REAL,
        next_attempt_at REAL,
        locked_by TEXT,
        locked_until REAL,
        links_saved INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_due ON messages(next_attempt_at);
    CREATE INDEX messages_user ON messages(user_id, received_at);
    CREATE TABLE bodies (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    CREATE TABLE copies (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        token TEXT NOT NULL UNIQUE,
        recipient TEXT,
        opens INTEGER NOT NULL,
        clicks INTEGER NOT NULL,
        text_links INTEGER NOT NULL,
        delivered_at REAL
    );
    CREATE INDEX copies_message ON copies(message_id);
    CREATE TABLE recipients (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        copy_id INTEGER REFERENCES copies(id) ON DELETE SET NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '',
        done_at REAL
    );
    CREATE INDEX recipients_message ON recipients(message_id);
    CREATE TABLE links (
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (message_id, position)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        copy_id INTEGER NOT NULL REFERENCES copies(id) ON DELETE CASCADE,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        at REAL NOT NULL,
        position INTEGER,
        ip TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        class TEXT NOT NULL,
        implied INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_message ON events(message_id, at);
    CREATE INDEX events_copy ON events(copy_id);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        recipient TEXT,
        url TEXT,
        text TEXT NOT NULL,
        at REAL NOT NULL,
        read INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX notifications_user ON notifications(user_id, at);
    CREATE TABLE captured (
        id INTEGER PRIMARY KEY,
        message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
        mail_from TEXT NOT NULL,
        rcpt_tos TEXT NOT NULL,
        data BLOB NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE do_not_track (entry TEXT PRIMARY KEY, created_at REAL NOT NULL);
    CREATE TABLE consent (address TEXT PRIMARY KEY, created_at REAL NOT NULL);
    """,
    # 2: web panel sessions. Only a hash of the cookie's session id is stored, so a
    # leaked database (or backup) opens no session.
    """
    CREATE TABLE panel_sessions (
        id_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        ip TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX panel_sessions_user ON panel_sessions(user_id);
    """,
    # 3: the claim query reads only mail still waiting. Indexing every message by its
    # next attempt made each claim walk past all mail ever sent (13,000 rows after one
    # benchmark), so delivery slowed down as the history grew.
    """
    DROP INDEX messages_due;
    CREATE INDEX messages_pending ON messages(next_attempt_at) WHERE status IN ('queued', 'deferred');
    """,
    # 4: whether every header From address is the sender's own: only such mail is DKIM-signed.
    # Mail spooled before this is not known to be, so it goes out unsigned.
    """
    ALTER TABLE messages ADD COLUMN from_owned INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: webhooks and their durable outbox. A delivery's id is its event id (the same on every
    # retry); hits and the deliveries they cause are written in one transaction.
    # MIGNUM: outbox branch, webhooks + webhook_deliveries + webhook_attempts
    """
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        kind TEXT NOT NULL,
        events TEXT NOT NULL,
        humans_only INTEGER NOT NULL DEFAULT 1,
        first_only INTEGER NOT NULL DEFAULT 1,
        unopened_after REAL NOT NULL DEFAULT 259200,
        digest REAL NOT NULL DEFAULT 0,
        enabled INTEGER NOT NULL DEFAULT 1,
        secret TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        failing_since REAL
    );
    CREATE INDEX webhooks_user ON webhooks(user_id);
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        webhook_id INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        payload TEXT NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        locked_by TEXT,
        locked_until REAL,
        status TEXT NOT NULL DEFAULT 'queued',
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(due_at) WHERE status = 'queued';
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        status_code INTEGER,
        latency REAL NOT NULL,
        error TEXT NOT NULL
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id);
    """,
    # 6: API tokens have a name and remember when they were last used (the panel and the API list them)
    """
    ALTER TABLE api_tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE api_tokens ADD COLUMN last_used_at REAL;
    """,
    # 7: the privacy lifecycle. Do-not-track and consent entries say when, by whom and from
    # where they were recorded (consent: also when it was given); retention purges by time,
    # so events and messages are indexed by it; a purged message's links keep redirecting
    # from retired_links (its copies' tokens in retired_tokens), with nothing about anyone.
    """
    ALTER TABLE do_not_track ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE do_not_track ADD COLUMN source TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent ADD COLUMN source TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent ADD COLUMN given_at REAL;
    CREATE INDEX events_at ON events(at);
    CREATE INDEX messages_received ON messages(received_at);
    CREATE INDEX recipients_address ON recipients(lower(address));
    CREATE INDEX notifications_message ON notifications(message_id);
    CREATE INDEX captured_message ON captured(message_id);
    CREATE TABLE retired_tokens (token TEXT PRIMARY KEY, queue_id TEXT NOT NULL);
    CREATE TABLE retired_links (
        queue_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (queue_id, position)
    );
    """,
    # 8: users may be disabled (no login, no mail, no API) and choose the panel's language and time zone
    """
    ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT '';
    ALTER TABLE users ADD COLUMN timezone TEXT NOT NULL DEFAULT '';
    """,
    # 9: a message's links are one row, their URLs a JSON array (relay/store/link_lists.py):
    # saving a mail's links is one insert instead of one per link. Element i is position i,
    # null where a position has no link (a click URL carries the position, so none moves).
    # The row says the links were saved (an empty array: a mail without links), so
    # messages.links_saved goes. The array is built position by position (json_group_array
    # promises no order).
    """
    ALTER TABLE links RENAME TO link_rows;
    CREATE TABLE links (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        urls TEXT NOT NULL
    );
    INSERT INTO links (message_id, urls)
    WITH RECURSIVE built(message_id, last, next, urls) AS (
        SELECT message_id, max(position), 0, '[]' FROM link_rows GROUP BY message_id
        UNION ALL
        SELECT b.message_id, b.last, b.next + 1, json_insert(b.urls, '$[#]', (SELECT r.url FROM link_rows r
            WHERE r.message_id = b.message_id AND r.position = b.next))
        FROM built b WHERE b.next <= b.last)
    SELECT message_id, urls FROM built WHERE next > last;
    INSERT INTO links (message_id, urls)
    SELECT id, '[]' FROM messages WHERE links_saved AND id NOT IN (SELECT message_id FROM links);
    DROP TABLE link_rows;
    ALTER TABLE messages DROP COLUMN links_saved;
    """,
]
