"""relay.policy: who is tracked, how, and why."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.control import OFF, ON, Choice, MessageControl, read_controls
from relay.policy import (
    MODES, PrivacyRules, RecipientPlan, TrackingPlan, UserPolicy, decide, parse_policy_updates,
)

SENDER = "Alice@Example.COM"
OUT = "bob@customer.org"
NOTHING = MessageControl(None, None)


def one(policy: UserPolicy, control: MessageControl = NOTHING, *, recipient: str = OUT,
        privacy: PrivacyRules = PrivacyRules(), internal: frozenset[str] | None = None) -> RecipientPlan:
    plan = decide(policy, control, sender=SENDER, recipients=[recipient], privacy=privacy,
                  internal_domains=internal)
    assert len(plan.recipients) == 1
    return plan.recipients[0]


def dims(r: RecipientPlan) -> tuple[bool, bool, bool, str]:
    return (r.opens, r.clicks, r.text_links, r.reason)


# --- precedence ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, header, tag, sticky, expected", [
    # policy default
    ("always", None, None, None, (True, True, False, "default always")),
    ("opt-in", None, None, None, (False, False, False, "default opt-in")),
    ("off", None, None, None, (False, False, False, "policy off")),
    # policy off beats everything the message says
    ("off", ON, ON, ON, (False, False, False, "policy off")),
    # header beats subject tag, sticky and default
    ("opt-in", ON, OFF, OFF, (True, True, False, "header")),
    ("always", OFF, ON, ON, (False, False, False, "header")),
    ("opt-in", Choice(True, False), None, None, (True, False, False, "header")),
    ("opt-in", Choice(False, False, True), None, None, (False, False, True, "header")),
    # subject tag beats sticky and default
    ("opt-in", None, ON, OFF, (True, True, False, "subject tag")),
    ("always", None, OFF, ON, (False, False, False, "subject tag")),
    # sticky beats default
    ("opt-in", None, None, ON, (True, True, False, "sticky")),
    ("always", None, None, OFF, (False, False, False, "sticky")),
    ("always", None, None, Choice(True, False), (True, False, False, "sticky")),
    # a partial header takes the other dimension from the next layer down
    ("opt-in", Choice(True, None), None, None, (True, False, False, "header")),
    ("always", Choice(False, None), None, None, (False, True, False, "header")),
    ("always", Choice(None, False), None, None, (True, False, False, "header")),
    ("opt-in", Choice(True, None), ON, None, (True, True, False, "header")),
    ("opt-in", Choice(None, True, True), OFF, None, (False, True, True, "header")),
    ("opt-in", Choice(True, None), None, Choice(False, True, True), (True, True, True, "header")),
    ("always", Choice(None, False), OFF, None, (False, False, False, "header")),
])
def test_precedence(mode: str, header: Choice | None, tag: Choice | None, sticky: Choice | None,
                    expected: tuple) -> None:
    policy = UserPolicy(mode=mode, sticky=True, sticky_choice=sticky)
    assert dims(one(policy, MessageControl(header, tag))) == expected


@pytest.mark.parametrize("privacy, expected", [
    (PrivacyRules(do_not_track=frozenset({"bob@customer.org"})), "do-not-track"),
    (PrivacyRules(do_not_track=frozenset({"@customer.org"})), "do-not-track"),
    (PrivacyRules(consent_required=True), "no consent"),
    (PrivacyRules(do_not_track=frozenset({"@customer.org"}), consent_required=True,
                  consented=frozenset({OUT})), "do-not-track"),
])
def test_privacy_beats_everything(privacy: PrivacyRules, expected: str) -> None:
    for mode in MODES:
        policy = UserPolicy(mode=mode, sticky_choice=ON)
        r = one(policy, MessageControl(ON, ON), privacy=privacy)
        assert dims(r) == (False, False, False, expected)


def test_consent_recorded_allows_tracking() -> None:
    privacy = PrivacyRules(consent_required=True, consented=frozenset({"bob@customer.org"}))
    assert one(UserPolicy(mode="always"), recipient="Bob@Customer.ORG", privacy=privacy).opens
    assert one(UserPolicy(mode="always"), recipient="carol@customer.org", privacy=privacy).reason == "no consent"


def test_consent_not_required_ignores_consent_list() -> None:
    assert one(UserPolicy(mode="always"), privacy=PrivacyRules(consented=frozenset())).opens


@pytest.mark.parametrize("recipient", ["bob@customer.org", "BOB@CUSTOMER.ORG", "Bob@customer.org",
                                       "<bob@customer.org>", " bob@Customer.org "])
def test_dnt_address_lookup_is_case_insensitive(recipient: str) -> None:
    privacy = PrivacyRules(do_not_track=frozenset({"bob@customer.org"}))
    r = one(UserPolicy(mode="always"), recipient=recipient, privacy=privacy)
    assert r.reason == "do-not-track" and not r.tracked
    assert r.address == recipient   # reported as given


def test_dnt_domain_matches_exact_domain_only() -> None:
    privacy = PrivacyRules(do_not_track=frozenset({"@customer.org"}))
    policy = UserPolicy(mode="always")
    assert one(policy, recipient="x@CUSTOMER.org", privacy=privacy).reason == "do-not-track"
    assert one(policy, recipient="x@sub.customer.org", privacy=privacy).tracked
    assert one(policy, recipient="x@customer.org.evil", privacy=privacy).tracked
    assert one(policy, recipient="customer.org@other.net", privacy=privacy).tracked


def test_dnt_other_address_same_domain_still_tracked() -> None:
    privacy = PrivacyRules(do_not_track=frozenset({"bob@customer.org"}))
    assert one(UserPolicy(mode="always"), recipient="carol@customer.org", privacy=privacy).tracked


# --- internal recipients ------------------------------------------------------------------------

@pytest.mark.parametrize("recipient", ["colleague@example.com", "Colleague@EXAMPLE.com"])
def test_sender_domain_is_internal_by_default(recipient: str) -> None:
    r = one(UserPolicy(mode="always"), MessageControl(ON, ON), recipient=recipient)
    assert dims(r) == (False, False, False, "internal")


def test_internal_domains_replace_sender_domain() -> None:
    internal = frozenset({"corp.example", "Example.NET"})
    policy = UserPolicy(mode="always")
    assert one(policy, recipient="x@corp.example", internal=internal).reason == "internal"
    assert one(policy, recipient="x@example.net", internal=internal).reason == "internal"
    # the sender's own domain is no longer implied
    assert one(policy, recipient="x@example.com", internal=internal).tracked
    assert one(policy, recipient="x@sub.corp.example", internal=internal).tracked


def test_empty_internal_domains_tracks_own_domain() -> None:
    assert one(UserPolicy(mode="always"), recipient="x@example.com", internal=frozenset()).tracked


def test_sender_without_domain_has_no_internal_domain() -> None:
    plan = decide(UserPolicy(mode="always"), NOTHING, sender="", recipients=["a@b.c", "local"])
    assert [r.tracked for r in plan.recipients] == [True, True]


# --- opens/clicks switches cap the choice ---------------------------------------------------------

@pytest.mark.parametrize("opens, clicks, choice, expected", [
    (True, True, Choice(True, True, True), (True, True, True)),
    (False, True, Choice(True, True, True), (False, True, True)),
    (True, False, Choice(True, True, True), (True, False, False)),
    (False, False, ON, (False, False, False)),
    (True, True, Choice(False, False, True), (False, False, True)),
    (True, False, Choice(False, False, True), (False, False, False)),
])
def test_switches_cap_the_choice(opens: bool, clicks: bool, choice: Choice, expected: tuple) -> None:
    policy = UserPolicy(mode="opt-in", opens=opens, clicks=clicks)
    r = one(policy, MessageControl(choice, None))
    assert (r.opens, r.clicks, r.text_links) == expected
    assert r.reason == "header"


def test_switches_cap_default_always() -> None:
    r = one(UserPolicy(mode="always", opens=False))
    assert dims(r) == (False, True, False, "default always")


# --- sticky ---------------------------------------------------------------------------------------

def test_sticky_records_explicit_choice() -> None:
    plan = decide(UserPolicy(mode="opt-in"), MessageControl(None, ON), sender=SENDER, recipients=[OUT])
    assert plan.new_sticky_choice == ON


def test_sticky_records_resolved_choice_not_partial() -> None:
    policy = UserPolicy(mode="opt-in", sticky_choice=Choice(True, True, True))
    plan = decide(policy, MessageControl(Choice(False, None), None), sender=SENDER, recipients=[OUT])
    assert plan.new_sticky_choice == Choice(False, True, True)
    assert plan.new_sticky_choice.complete


def test_sticky_records_uncapped_choice() -> None:
    policy = UserPolicy(mode="opt-in", clicks=False)
    plan = decide(policy, MessageControl(ON, None), sender=SENDER, recipients=[OUT])
    assert plan.new_sticky_choice == ON
    assert not plan.recipients[0].clicks


def test_sticky_records_even_when_privacy_blocks_recipients() -> None:
    plan = decide(UserPolicy(), MessageControl(ON, None), sender=SENDER, recipients=[OUT],
                  privacy=PrivacyRules(consent_required=True))
    assert plan.new_sticky_choice == ON and not plan.tracked


@pytest.mark.parametrize("policy, control", [
    (UserPolicy(sticky=True), NOTHING),                          # no explicit choice
    (UserPolicy(sticky=False), MessageControl(ON, None)),        # sticky off
    (UserPolicy(mode="off"), MessageControl(ON, ON)),            # the choice had no effect
])
def test_no_sticky_choice_recorded(policy: UserPolicy, control: MessageControl) -> None:
    plan = decide(policy, control, sender=SENDER, recipients=[OUT])
    assert plan.new_sticky_choice is None


def test_sticky_choice_ignored_when_sticky_off() -> None:
    policy = UserPolicy(mode="opt-in", sticky=False, sticky_choice=ON)
    assert dims(one(policy)) == (False, False, False, "default opt-in")


def test_sticky_round_trip_over_two_messages() -> None:
    policy = UserPolicy(mode="opt-in")
    first = decide(policy, read_controls(b"Subject: [track] hi\r\n\r\n"), sender=SENDER, recipients=[OUT])
    assert first.tracked
    policy = UserPolicy(mode="opt-in", sticky_choice=first.new_sticky_choice)
    second = decide(policy, read_controls(b"Subject: hi\r\n\r\n"), sender=SENDER, recipients=[OUT])
    assert second.tracked and second.recipients[0].reason == "sticky"
    assert second.new_sticky_choice is None
    third = decide(policy, read_controls(b"Subject: [notrack] hi\r\n\r\n"), sender=SENDER, recipients=[OUT])
    assert not third.tracked and third.new_sticky_choice == OFF


# --- plans for several recipients --------------------------------------------------------------------

def test_mixed_recipients_each_get_a_reason() -> None:
    privacy = PrivacyRules(do_not_track=frozenset({"dnt@x.org", "@blocked.org"}))
    recipients = ["a@x.org", "dnt@x.org", "b@blocked.org", "c@example.com", "a@x.org"]
    plan = decide(UserPolicy(mode="opt-in"), MessageControl(Choice(True, False), None), sender=SENDER,
                  recipients=recipients, privacy=privacy)
    assert [r.address for r in plan.recipients] == recipients
    assert [r.reason for r in plan.recipients] == ["header", "do-not-track", "do-not-track",
                                                    "internal", "header"]
    assert [r.opens for r in plan.recipients] == [True, False, False, False, True]
    assert plan.tracked


def test_plan_tracked_property() -> None:
    assert not TrackingPlan((RecipientPlan("a@b", False, False, False, "x"),), None).tracked
    assert TrackingPlan((RecipientPlan("a@b", False, False, True, "x"),), None).tracked
    assert not TrackingPlan((), None).tracked
    assert not decide(UserPolicy(mode="always"), NOTHING, sender=SENDER, recipients=[]).tracked


def test_invalid_mode_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        UserPolicy(mode="sometimes")


_CHOICE = st.one_of(st.none(), st.builds(Choice, st.one_of(st.none(), st.booleans()),
                                         st.one_of(st.none(), st.booleans()), st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODES), st.booleans(), st.booleans(), st.booleans(), _CHOICE, _CHOICE, _CHOICE)
def test_property_caps_and_off_hold(mode: str, opens: bool, clicks: bool, sticky: bool,
                                    header: Choice | None, tag: Choice | None,
                                    stored: Choice | None) -> None:
    if stored is not None and not stored.complete:
        stored = stored.fill(OFF)
    policy = UserPolicy(mode=mode, opens=opens, clicks=clicks, sticky=sticky, sticky_choice=stored)
    plan = decide(policy, MessageControl(header, tag), sender=SENDER, recipients=[OUT, "me@example.com"])
    outside, inside = plan.recipients
    assert not inside.tracked
    assert not (outside.opens and not opens)
    assert not ((outside.clicks or outside.text_links) and not clicks)
    if mode == "off":
        assert not plan.tracked and plan.new_sticky_choice is None
    if plan.new_sticky_choice is not None:
        assert plan.new_sticky_choice.complete


# --- parse_policy_updates -------------------------------------------------------------------------------

def test_updates_apply() -> None:
    current = UserPolicy()
    new = parse_policy_updates(current, {"mode": "always", "opens": "false", "clicks": "yes",
                                         "notify": "0", "sticky": "ON"})
    assert new == UserPolicy(mode="always", opens=False, clicks=True, notify=False, sticky=True)


@pytest.mark.parametrize("word, value", [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True), (" TRUE ", True),
    ("false", False), ("FALSE", False), ("no", False), ("off", False), ("0", False),
])
def test_updates_bool_words(word: str, value: bool) -> None:
    assert parse_policy_updates(UserPolicy(notify=not value), {"notify": word}).notify is value


def test_updates_accept_json_booleans() -> None:
    assert parse_policy_updates(UserPolicy(), {"opens": False, "clicks": True}).opens is False  # type: ignore[dict-item]


@pytest.mark.parametrize("mode", [*MODES, "ALWAYS", " Opt-In "])
def test_updates_mode(mode: str) -> None:
    assert parse_policy_updates(UserPolicy(), {"mode": mode}).mode == mode.strip().lower()


@pytest.mark.parametrize("pairs, message", [
    ({"mode": "sometimes"}, r"mode: expected one of always, opt-in, off, got 'sometimes'"),
    ({"opens": "maybe"}, r"opens: expected true or false, got 'maybe'"),
    ({"clicks": ""}, r"clicks: expected true or false"),
    ({"colour": "blue"}, r"unknown policy key 'colour' \(expected one of: mode, opens, clicks"),
    ({"sticky_choice": "purple"}, r"sticky_choice: expected none or X-Track words"),
])
def test_updates_reject_bad_pairs(pairs: dict, message: str) -> None:
    current = UserPolicy()
    with pytest.raises(ValueError, match=message):
        parse_policy_updates(current, pairs)


def test_updates_empty_keeps_policy() -> None:
    current = UserPolicy(mode="always", sticky_choice=OFF)
    assert parse_policy_updates(current, {}) == current


def test_updates_key_spelling_is_forgiving() -> None:
    assert parse_policy_updates(UserPolicy(), {"Sticky-Choice": "opens"}).sticky_choice == Choice(True, False)


def test_updates_sticky_choice() -> None:
    current = UserPolicy(sticky_choice=ON)
    assert parse_policy_updates(current, {"sticky_choice": "none"}).sticky_choice is None
    assert parse_policy_updates(current, {"sticky_choice": "off"}).sticky_choice == OFF


def test_mode_change_forgets_sticky_choice() -> None:
    current = UserPolicy(mode="opt-in", sticky_choice=OFF)
    assert parse_policy_updates(current, {"mode": "always"}).sticky_choice is None
    # the same mode sent again (a full PUT from the panel) keeps it
    assert parse_policy_updates(current, {"mode": "opt-in", "opens": "true"}).sticky_choice == OFF


def test_sticky_off_forgets_sticky_choice() -> None:
    current = UserPolicy(sticky_choice=ON)
    assert parse_policy_updates(current, {"sticky": "false"}).sticky_choice is None
    assert parse_policy_updates(current, {"sticky": "true"}).sticky_choice == ON
