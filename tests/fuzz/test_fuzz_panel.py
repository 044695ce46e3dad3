"""The panel's pure handling of input: where to go after login (the `next` parameter), and a
captured copy's HTML made inert for its frame."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import re

from admin.capture_view import neutralised
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


# a captured copy is whatever the sender wrote: attribute names, quotes, spacing, half tags
HTML_PIECES = st.sampled_from(["<a ", "<img ", "<form ", "<meta ", " href", " HREF", "src", "srcset", "action",
                               "formaction", "http-equiv", "background", "ping", "=", " = ", "\"", "'", "/", ">",
                               " ", "\t", "\n", "x", "\u2603", "data-inert-"])
ACTIVE = re.compile(rb"(?i)(?<=[\s\"'/])(href|action|formaction|http-equiv|src|srcset|background|ping)\s*=")


@fuzz
@given(st.lists(HTML_PIECES).map("".join))
def test_an_inert_copy_keeps_no_attribute_that_goes_or_fetches(html):
    assert not ACTIVE.search(neutralised(html))


def test_making_a_copy_inert_costs_linear_time():
    assert_linear(lambda n: " href" * n, neutralised)
    assert_linear(lambda n: "<a href" + " " * n, neutralised)
    assert_linear(lambda n: '<img src="x" ' * n, neutralised)
