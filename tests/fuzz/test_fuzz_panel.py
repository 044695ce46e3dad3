"""The panel's pure handling of client input: where to go after login (the `next` parameter)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from admin.sessions import safe_next
from fuzzing import assert_linear, fuzz

# the shapes that matter: slashes, backslashes, schemes, controls and non-ASCII
PIECES = st.sampled_from(["/", "//", "\\", "/\\", "https:", "evil.example", "login", "%2F", "\r\n", "\t",
                          " ", "\x00", "\u2603", "?next=", "@", "."])
TARGETS = st.one_of(st.text(), st.lists(PIECES).map("".join))


@fuzz
@given(TARGETS)
def test_next_is_always_a_path_on_this_site(target):
    result = safe_next(target)
    assert result == "/" or result == target
    assert result.startswith("/") and not result.startswith(("//", "/\\"))
    assert result.isascii() and result.isprintable() and " " not in result and "\\" not in result


def test_next_costs_linear_time():
    assert_linear(lambda n: "/a" * n, safe_next)
    assert_linear(lambda n: "/" + "\u2603" * n, safe_next)
