"""A webhook's settings from any JSON a user sends: a spec or one ValueError naming the field."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.webhook_spec import FIELDS, parse_spec

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=12)


@fuzz
@given(body=st.dictionaries(st.sampled_from(FIELDS) | st.text(), JSON, max_size=9))
def test_any_body_gives_a_spec_or_one_named_error(body: dict) -> None:
    try:
        spec = parse_spec(body)
    except ValueError as e:
        assert any(str(e).startswith(f"{name}: ") for name in (*FIELDS, *body))
        return
    assert spec.url == body["url"] and spec.kind in ("json", "slack", "mattermost", "discord", "teams", "googlechat")
    assert spec.digest >= 0 and spec.unopened_after > 0 and spec.events


def test_parsing_is_linear() -> None:
    assert_linear(lambda n: {"url": "https://example.com/hook", "digest": "1" * n + "x",
                             "events": ",".join(["open"] * n)}, _verdict)


def _verdict(body: dict) -> str:
    try:
        return repr(parse_spec(body))
    except ValueError as e:
        return str(e)
