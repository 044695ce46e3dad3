"""The privacy lifecycle's pure rules: purge schedule, consent files, summaries."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from relay.policy import erased_entry, privacy_lookups
from relay.privacy import (
    counts_text, next_purge_at, parse_consent_csv, retention_cutoff, subject_json,
)
from relay.records import ErasureCounts, PrivacyRecord, PurgeCounts, SubjectData, SubjectEvent, SubjectMail

UTC = timezone.utc
CET = timezone(timedelta(hours=1))


def test_the_purge_runs_at_the_next_purge_time_in_the_given_zone():
    noon = datetime(2027, 1, 15, 12, 0, tzinfo=CET).timestamp()
    assert next_purge_at(noon, 3, 30, CET) == datetime(2027, 1, 16, 3, 30, tzinfo=CET).timestamp()
    assert next_purge_at(noon, 12, 1, CET) == noon + 60
    assert next_purge_at(noon, 12, 0, CET) == noon + 86400  # at the minute itself: it just ran
    assert next_purge_at(noon, 11, 59, UTC) == datetime(2027, 1, 15, 11, 59, tzinfo=UTC).timestamp()  # noon CET is 11:00 UTC


def test_retention_cutoff_and_zero_means_forever():
    assert retention_cutoff(1_000_000.0, 2) == 1_000_000.0 - 2 * 86400
    assert retention_cutoff(1_000_000.0, 0) is None


def test_consent_files_keep_good_rows_and_name_the_bad_ones():
    text = ("address,date,source\n"
            "Carol@Example.org,2025-03-01,web form\n"
            "\n"
            "# a comment\n"
            "not-an-address,2025-03-01\n"
            "dave@example.org\n"
            "erin@example.org,yesterday\n"
            "frank@example.org,2999-01-01T00:00:00Z\n"
            "@example.org,2025-01-01\n")
    now = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
    parsed = parse_consent_csv(text, "import:crm.csv", now)
    assert parsed.lines == 6
    assert parsed.records == (
        PrivacyRecord("carol@example.org", now, "", "import:crm.csv (web form)",
                      datetime(2025, 3, 1, tzinfo=UTC).timestamp()),
        PrivacyRecord("dave@example.org", now, "", "import:crm.csv", None))
    assert [n for n, _ in parsed.rejected] == [5, 7, 8, 9]
    assert "not an address" in parsed.rejected[0][1] and "not a date" in parsed.rejected[1][1]
    assert "future" in parsed.rejected[2][1]


def test_summaries_name_only_what_was_removed():
    assert counts_text(PurgeCounts()) == "nothing"
    assert counts_text(PurgeCounts(events=3, messages=1)) == "3 events, 1 message"
    assert counts_text(ErasureCounts(copies=2, deliveries=1, captured=2, still_queued=4)) == (
        "2 copies, 1 webhook delivery, 2 captured copies")


def test_an_erased_address_is_looked_up_by_its_digest_only():
    dnt, _ = privacy_lookups(["Bob@Example.org"])
    assert erased_entry("<BOB@example.org>") in dnt and erased_entry("bob@example.org") == erased_entry("Bob@Example.ORG")
    assert "bob" not in erased_entry("bob@example.org")


def test_the_access_answer_is_json_with_rfc3339_times():
    event = SubjectEvent("open", 1_800_000_000.0, "human", "203.0.113.0", "UA <b>", None, False)
    mail = SubjectMail(7, "<m@x>", "Hi", "alice@example.com", 1_800_000_000.0, "sent", None, True, False, (event,))
    data = SubjectData("bob@example.org", (mail,), (), (PrivacyRecord("bob@example.org", 1_800_000_000.0),), (), 0)
    out = subject_json(data, 1_800_000_100.0)
    assert out["mails"][0]["events"] == [{"type": "open", "at": "2027-01-15T08:00:00Z", "class": "human",
                                          "ip": "203.0.113.0", "user_agent": "UA <b>", "url": None,
                                          "shared_copy": False}]
    assert out["consent"] == [{"entry": "bob@example.org", "recorded_at": "2027-01-15T08:00:00Z",
                               "recorded_by": None, "source": None}]


def test_cursors_and_durations_refuse_what_no_server_made():
    import pytest

    from relay.config import parse_duration
    from relay.errors import ConfigError
    from relay.store.queries import cursor_text, parse_cursor

    assert parse_cursor(cursor_text((1.5, 7))) == (1.5, 7)
    for bad in ("inf_1", "nan_2", "1.0_²", "1.0", "x_1"):
        with pytest.raises(ValueError):
            parse_cursor(bad)
    for bad in ("9" * 400, float("inf"), "1e309s"):
        with pytest.raises(ConfigError):
            parse_duration(bad, "k")


def test_erasure_removes_mail_to_them_alone_whole_and_only_their_part_of_shared_mail():
    from relay.privacy import RecipientRow, plan_erasure

    plan = plan_erasure([
        RecipientRow(1, 10, 100, "sent", True, others=0),  # to them alone
        RecipientRow(2, 11, 101, "sent", True, others=1),  # split copies: theirs goes
        RecipientRow(3, 12, 102, "bounced", False, others=2),  # a shared copy stays
        RecipientRow(4, 13, None, "sent", False, others=1),  # untracked
        RecipientRow(5, 14, 104, "deferred", True, others=0),  # still on its way: left alone
    ])
    assert (plan.whole, plan.shared, plan.own_copies) == ([10], [11, 12, 13], [101])
    assert (plan.recipient_ids, plan.still_queued) == ([1, 2, 3, 4], 1)


def test_an_erased_link_leaves_a_gap_so_the_others_keep_their_positions():
    from relay.privacy import erase_links

    urls = ["https://a.example/", None, "https://b.example/?to=Bob@Example.org", "https://c.example/"]
    assert erase_links(urls, "bob@example.org") == (
        ["https://a.example/", None, None, "https://c.example/"], 1)
    assert erase_links(urls, "carol@example.org") == (urls, 0)
