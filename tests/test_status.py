"""A message's status roll-up, the sticky-choice update and the privacy look-ups, without a store."""
from __future__ import annotations

from relay.control import Choice
from relay.policy import UserPolicy, erased_entry, privacy_lookups, with_sticky_choice
from relay.records import MessageOutcome, RecipientResult
from relay.status import done_at, message_outcome, next_attempt_at, pending_count, roll_up


def test_roll_up():
    assert roll_up({"sent": 2}) == "sent"
    assert roll_up({"sent": 1, "deferred": 1}) == "deferred"
    assert roll_up({"sent": 1, "queued": 1, "bounced": 1}) == "deferred"
    assert roll_up({"sent": 1, "bounced": 1}) == "partial"
    assert roll_up({"bounced": 2}) == "bounced"
    assert pending_count({"queued": 2, "deferred": 1, "sent": 4}) == 3


def test_next_attempt_is_the_earliest_deferral_else_now():
    results = [RecipientResult(1, "deferred", "", 50.0), RecipientResult(2, "deferred", "", 30.0),
               RecipientResult(3, "sent")]
    assert next_attempt_at(results, 10.0) == 30.0
    assert next_attempt_at([RecipientResult(1, "sent")], 10.0) == 10.0
    assert done_at("sent", 5.0) == 5.0 and done_at("bounced", 5.0) == 5.0 and done_at("deferred", 5.0) is None


def test_sticky_choice_update_keeps_the_rest_of_the_policy():
    assert with_sticky_choice(None, Choice(True, False)) == UserPolicy(sticky_choice=Choice(True, False))
    mine = UserPolicy(mode="always", notify=False, sticky_choice=Choice(False, False))
    assert with_sticky_choice(mine, Choice(True, True)) == UserPolicy(mode="always", notify=False,
                                                                     sticky_choice=Choice(True, True))


def test_privacy_lookups_are_each_address_its_erased_digest_and_its_domain():
    assert privacy_lookups(["Bob@Example.org", "eve@secret.example", "bob@example.org"]) == (
        ["bob@example.org", "eve@secret.example", erased_entry("bob@example.org"), erased_entry("eve@secret.example"),
         "@example.org", "@secret.example"],
        ["bob@example.org", "eve@secret.example"])
    assert privacy_lookups([]) == ([], [])


def test_an_outcome_counts_the_settled_recipients_with_the_results():
    deferred = RecipientResult(2, "deferred", "451 later", 70.0)
    assert message_outcome((), [RecipientResult(1, "sent"), deferred], 10.0) == MessageOutcome(
        "deferred", 70.0, sent=True, erase_body=False)
    # the second attempt bounces the one deferred: partial, because the first one was sent
    assert message_outcome(("sent",), [RecipientResult(2, "bounced", "550 no")], 80.0) == MessageOutcome(
        "partial", 80.0, sent=True, erase_body=True)
    assert message_outcome(("bounced",), [RecipientResult(2, "bounced")], 80.0) == MessageOutcome(
        "bounced", 80.0, sent=False, erase_body=True)
    assert message_outcome(("bounced", "sent"), [RecipientResult(3, "sent")], 80.0) == MessageOutcome(
        "partial", 80.0, sent=True, erase_body=True)
    assert message_outcome(("sent",), [RecipientResult(2, "sent")], 80.0) == MessageOutcome(
        "sent", 80.0, sent=True, erase_body=True)


def test_an_outcome_waits_while_any_recipient_does():
    later = [RecipientResult(2, "deferred", "", 500.0), RecipientResult(3, "deferred", "", 300.0)]
    assert message_outcome(("bounced",), later, 80.0) == MessageOutcome("deferred", 300.0, sent=False,
                                                                        erase_body=False)
    assert message_outcome(("sent", "sent"), later, 80.0).sent
