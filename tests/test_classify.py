"""relay/classify.py against the real-world user-agent corpus, the timing rules and garbage.

Run `python tests/test_classify.py` for a quick speed measurement (not asserted here).
"""
from __future__ import annotations

import csv
import ipaddress
import json
import re
import time
from dataclasses import FrozenInstanceError, fields
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import classify as classify_module
from relay.classify import CLASSES, Hit, HitContext, Rules, classify, load_rules, parse_rules
from corpus import CORPUS, corpus_files, require_corpus

UA_DIR = "user-agents"
T0 = datetime(2024, 5, 6, 9, 0, 0, tzinfo=timezone.utc)
LONG_AGO = HitContext(delivered_at=T0 - timedelta(hours=2))  # far outside every window
ORDINARY_IP = "198.51.100.23"  # TEST-NET-2: in no shipped list (checked below)
ORDINARY_IP6 = "2001:db8:1::23"
APPLE_IP = "17.58.101.7"  # Apple's own 17.0.0.0/8
RELAY_IP = "104.28.28.5"  # inside 104.28.28.0/26 of the iCloud Private Relay egress list
EOP_IP = "40.107.218.12"  # Exchange Online Protection (gophish/gophish#973)
GMAIL_PROXY_IP = "66.249.84.17"  # Gmail image proxy space 66.249.80.0/20
GOOGLEBOT_IP = "66.249.66.1"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)
APPLE_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.6326; Pro)"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"

# Crawler-Detect counts mail clients (and the Slack desktop app) as crawlers because they are
# not browsers; for a mail tracker they are the readers. The only lines allowed to be human:
CRAWLER_LIST_EXCEPTIONS = re.compile(
    r"outlook|^airmail |^polymail/|^canary%20mail/|^mail/[\d.]+ cfnetwork/|slack_ssb/", re.I
)

RULES = load_rules()


def hit(ua: str = CHROME, ip: str = ORDINARY_IP, *, kind: str = "open", method: str = "GET",
        purpose: str = "", at: datetime = T0, position: int | None = None) -> Hit:
    return Hit(kind=kind, method=method, ip=ip, user_agent=ua, purpose=purpose, at=at,
               position=position)


def label(ua: str = CHROME, ip: str = ORDINARY_IP, ctx: HitContext = LONG_AGO, **kw: object) -> str:
    return classify(hit(ua, ip, **kw), ctx, RULES)  # type: ignore[arg-type]


# ---- corpus helpers --------------------------------------------------------------------------

def load_uas(path: Path) -> list[str]:
    """The corpus README's loader: one UA per line, '#' lines are comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [l for l in lines if l.strip() and not l.startswith("#")]


def yml_values(path: Path) -> list[str]:
    """Values of isbot's fixture YAML ('name:' then '  - "ua"' lines); no YAML dependency."""
    values = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("  - "):
            value = line[4:]
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values.append(value)
    return values


def ua_params(*names: str) -> list:
    """One param per UA line of the named corpus files, id 'file:line'."""
    params = []
    for name in names:
        path = CORPUS / UA_DIR / name
        if path.is_file():
            params += [pytest.param(ua, id=f"{name}:{i}") for i, ua in enumerate(load_uas(path), 1)]
    return params or [pytest.param(None, id=f"missing-corpus-{names[0]}")]


def corpus_path(*parts: str) -> Path:
    return require_corpus().joinpath(UA_DIR, *parts)


def tsv_rows() -> list:
    path = CORPUS / UA_DIR / "security-scanners-observed.tsv"
    if not path.is_file():
        return [pytest.param(None, id="missing-corpus-tsv")]
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if not l.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    return [pytest.param(r, id=f"{i}-{r['expected_class']}-{r['source_ip'] or 'no-ip'}")
            for i, r in enumerate(rows, 1)]


# ---- interface and data files ----------------------------------------------------------------

def test_public_interface() -> None:
    assert [f.name for f in fields(Hit)] == [
        "kind", "method", "ip", "user_agent", "purpose", "at", "position"]
    assert [f.name for f in fields(HitContext)] == [
        "delivered_at", "sender_ips", "recent_clicks", "machine_window", "burst_window"]
    ctx = HitContext(None)
    assert ctx.machine_window == timedelta(seconds=10) and ctx.burst_window == timedelta(seconds=2)
    with pytest.raises(FrozenInstanceError):
        hit().ip = "1.2.3.4"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        RULES.ua = {}  # type: ignore[misc]
    assert isinstance(RULES, Rules) and load_rules() is RULES
    assert CLASSES == ("human", "proxy", "prefetch", "scanner", "self")


def test_module_says_it_is_pure_and_needs_no_corpus() -> None:
    source = Path(classify_module.__file__).read_text(encoding="utf-8")
    assert "No I/O" in (classify_module.__doc__ or "").splitlines()[0]
    assert "shared" not in source and "corpus" not in source


def data_files() -> list:
    return sorted(p.name for p in (resources.files("relay") / "data").iterdir()
                  if p.name in {classify_module.UA_FILE, *classify_module.NETWORK_FILES})


def test_every_data_file_is_shipped() -> None:
    assert data_files() == sorted({classify_module.UA_FILE, *classify_module.NETWORK_FILES})


@pytest.mark.parametrize("name", sorted({classify_module.UA_FILE, *classify_module.NETWORK_FILES}))
def test_data_file_names_source_and_licence_and_is_small(name: str) -> None:
    text = (resources.files("relay") / "data" / name).read_text(encoding="utf-8")
    header = "".join(l for l in text.splitlines(keepends=True)[:40] if l.startswith("#"))
    assert re.search(r"\bsources?\b", header, re.I), name
    assert re.search(r"licen[cs]e|CC0|Apache|MIT", header), name
    assert len(text.encode()) < 16_000, f"{name}: keep the packaged data compact"


def test_network_lists_do_not_overlap_across_classes_and_test_ips_are_ordinary() -> None:
    data = resources.files("relay") / "data"
    nets: dict[str, list] = {}
    for name, kind in classify_module.NETWORK_FILES.items():
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                nets.setdefault(kind, []).append(ipaddress.ip_network(line.split()[0]))
    kinds = sorted(nets)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            clash = [(x, y) for x in nets[a] for y in nets[b] if x.version == y.version and x.overlaps(y)]
            assert not clash, (a, b, clash[:3])
    for ip in (ORDINARY_IP, ORDINARY_IP6):
        assert not any(ipaddress.ip_address(ip) in n for ns in nets.values() for n in ns)


def test_prefix_tree_matches_like_the_plain_alternation() -> None:
    """The speed-up must not change what the packaged patterns match."""
    text = (resources.files("relay") / "data" / classify_module.UA_FILE).read_text(encoding="utf-8")
    section_patterns = re.findall(r"^\[scanner\]\n(.*?)(?=^\[)", text, re.S | re.M)[0]
    patterns = [l for l in section_patterns.splitlines() if l.strip() and not l.startswith("#")]
    plain = re.compile("|".join(f"(?:{p})" for p in patterns))
    fast = RULES.ua["scanner"]
    uas = load_uas(corpus_path("upstream", "crawler-detect-crawlers.txt"))
    uas += yml_values(corpus_path("upstream", "isbot-browsers.yml"))
    mismatched = [u for u in uas if bool(plain.search(u.lower())) != fast(u.lower())]
    assert not mismatched, mismatched[:5]


def test_browser_fast_path_agrees_with_the_full_search() -> None:
    """UAs that skip the pattern search (exact mainstream browser shapes) would pass it anyway."""
    uas = load_uas(corpus_path("browsers-desktop.txt")) + load_uas(corpus_path("browsers-mobile.txt"))
    browsers = [u.lower() for u in uas if classify_module._COMMON_BROWSER.fullmatch(u.lower())]
    assert len(browsers) > 0.8 * len(uas)  # the fast path is the usual path
    others = load_uas(corpus_path("upstream", "crawler-detect-crawlers.txt"))
    others += yml_values(corpus_path("upstream", "isbot-crawlers.yml"))
    others += yml_values(corpus_path("upstream", "isbot-browsers.yml"))
    fast = browsers + [u.lower() for u in others if classify_module._COMMON_BROWSER.fullmatch(u.lower())]
    assert [u for u in fast if classify_module._ua_sections(RULES, u) != "person"] == []


def test_parse_rules_names_the_broken_line() -> None:
    with pytest.raises(ValueError, match=r"user-agents.txt:2"):
        parse_rules({"user-agents.txt": "[scanner]\nbot(\n"})
    with pytest.raises(ValueError, match=r"proxy-networks.txt:1"):
        parse_rules({"proxy-networks.txt": "66.249.80.0/33 x\n"})
    empty = parse_rules({})  # no data at all: everything but the structural rules is human
    assert classify(hit(), LONG_AGO, empty) == "human"


# ---- the corpus, file by file ----------------------------------------------------------------

@pytest.mark.parametrize("ua", ua_params("mail-image-proxies.txt"))
def test_mail_image_proxies_are_proxy(ua: str | None) -> None:
    if ua is None:
        require_corpus()
    assert label(ua) == "proxy"
    assert label(ua, GMAIL_PROXY_IP) == "proxy"  # Google's network does not make it a scanner


@pytest.mark.parametrize("ua", ua_params("apple-mail-and-mpp.txt"))
def test_apple_mail_and_mpp(ua: str | None) -> None:
    if ua is None:
        require_corpus()
    # from Apple's networks every line (bare MPP UA, Apple Mail's stripped UA) is the MPP proxy
    assert label(ua, APPLE_IP) == "prefetch"
    assert label(ua, RELAY_IP) == "prefetch"
    if ua == "Mozilla/5.0":  # MPP's signature even where the network lists miss it
        assert label(ua, ORDINARY_IP) == "prefetch"
        assert label(ua, ORDINARY_IP, kind="click") == "scanner"
    else:  # Apple Mail loading images itself, later: a person
        assert label(ua, ORDINARY_IP) == "human"
        # the same stripped UA right at delivery is a privacy fetcher (warmbly/warmbly#569)
        at_delivery = HitContext(delivered_at=T0 - timedelta(seconds=3))
        assert label(ua, ORDINARY_IP, at_delivery) == "prefetch"


@pytest.mark.parametrize("ua", ua_params("mail-clients.txt", "browsers-desktop.txt", "browsers-mobile.txt"))
def test_mail_clients_and_browsers_are_human(ua: str | None) -> None:
    if ua is None:
        require_corpus()
    for kind in ("open", "click"):
        assert label(ua, ORDINARY_IP, kind=kind) == "human"
        assert label(ua, ORDINARY_IP6, kind=kind) == "human"


@pytest.mark.parametrize("ua", ua_params("link-preview-and-scanner-bots.txt"))
def test_link_previews_and_scanners(ua: str | None) -> None:
    if ua is None:
        require_corpus()
    expected = "prefetch" if ua == "Chrome Privacy Preserving Prefetch Proxy" else "scanner"
    for kind in ("open", "click"):
        assert label(ua, ORDINARY_IP, kind=kind) == expected
        assert label(ua, APPLE_IP, kind=kind) == expected


@pytest.mark.parametrize("row", tsv_rows())
def test_observed_security_scanners(row: dict | None) -> None:
    """Rows of security-scanners-observed.tsv, with the context each report describes.

    - proxy/prefetch rows are pixel fetches (opens) with no address in the report: an
      ordinary IP is used, so the UA alone has to decide; delivery long before.
    - scanner rows are link checks (clicks; the notes are about Safe Links consuming links).
      The file's lesson is that they come seconds after delivery, so they are judged with
      delivery 3 s earlier. Rows in Exchange Online Protection (40.107/16, 104.47/17) must
      be caught by their network alone too, even an hour after delivery. 40.94.x and the
      Azure address 20.72.100.79 are in no mail-security list: only timing catches them.
    - a CIDR in source_ip stands for any address in it: its first host is used.
    """
    if row is None:
        require_corpus()
    expected, source, ua = row["expected_class"], row["source_ip"], row["user_agent"]
    ip = str(next(ipaddress.ip_network(source).hosts())) if "/" in source else source or ORDINARY_IP
    if expected in ("proxy", "prefetch"):
        assert label(ua, ip, kind="open") == expected
        return
    assert expected == "scanner"
    seconds_after = HitContext(delivered_at=T0 - timedelta(seconds=3))
    assert label(ua, ip, seconds_after, kind="click") == "scanner"
    assert label(ua, ip, seconds_after, kind="click", at=T0 - timedelta(seconds=4)) == "scanner"
    if ip.startswith(("40.107.", "104.47.")):
        assert label(ua, ip, LONG_AGO, kind="click") == "scanner"
        assert label(ua, ip, LONG_AGO, kind="open") == "scanner"


# ---- bulk lists ------------------------------------------------------------------------------

def bulk(uas: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {c: [] for c in CLASSES}
    for ua in uas:
        out[label(ua)].append(ua)
    return out


@pytest.mark.parametrize("path", corpus_files(f"{UA_DIR}/upstream", "crawler-detect*.txt"))
def test_no_crawler_detect_line_is_human(path: Path | None) -> None:
    lines = load_uas(path or require_corpus())
    assert len(lines) > 3000
    humans = bulk(lines)["human"]
    assert [u for u in humans if not CRAWLER_LIST_EXCEPTIONS.search(u)] == []
    assert len(humans) <= 15, "the exception list is meant for a handful of mail clients"


def test_other_crawler_lists_are_almost_never_human() -> None:
    """Soft: isbot's and monperrus's crawler lists also hold apps that isbot's own browser
    list contains (DuckDuckGo, VS Code), so a few humans are expected; at most 2 %."""
    isbot = yml_values(corpus_path("upstream", "isbot-crawlers.yml"))
    entries = json.loads(corpus_path("upstream", "monperrus-crawler-user-agents.json").read_text(encoding="utf-8"))
    monperrus = [ua for entry in entries for ua in entry.get("instances", [])]
    for uas in (isbot, monperrus):
        assert len(uas) > 500
        humans = bulk(uas)["human"]
        assert len(humans) <= 0.02 * len(uas), humans[:20]


def test_isbot_browsers_are_mostly_not_scanners() -> None:
    """Soft: isbot's browser list also holds monitoring tools and an SQL-injection probe."""
    uas = yml_values(corpus_path("upstream", "isbot-browsers.yml"))
    assert len(uas) > 500
    scanners = bulk(uas)["scanner"]
    assert len(scanners) <= 0.05 * len(uas), scanners


# ---- precedence ------------------------------------------------------------------------------

@pytest.mark.parametrize(("ua", "ip", "kind", "expected"), [
    (GMAIL_PROXY, GMAIL_PROXY_IP, "open", "proxy"),  # Google's network, a reader behind it
    (CHROME, GMAIL_PROXY_IP, "open", "proxy"),  # the proxy with a browser-like UA
    (CHROME, GMAIL_PROXY_IP, "click", "scanner"),  # no reader's browser clicks from there
    ("Mozilla/5.0", APPLE_IP, "open", "prefetch"),
    (APPLE_MAIL, RELAY_IP, "open", "prefetch"),
    (SAFARI_IOS, APPLE_IP, "open", "human"),  # a person at Apple, or on Private Relay
    (SAFARI_IOS, RELAY_IP, "click", "human"),
    (OUTLOOK, ORDINARY_IP, "open", "human"),
    (OUTLOOK, EOP_IP, "open", "scanner"),  # nobody reads mail inside the filtering tier
    (CHROME, "2a01:111:f400:1::5", "click", "scanner"),  # EOP over IPv6
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", GOOGLEBOT_IP, "open", "scanner"),
    (CHROME, GOOGLEBOT_IP, "click", "scanner"),  # Googlebot's network with a browser UA
    (CHROME, "::ffff:40.107.1.1", "click", "scanner"),  # IPv4-mapped, as a dual-stack socket shows it
    ("curl/8.5.0", ORDINARY_IP, "click", "scanner"),
    ("python-requests/2.31.0", ORDINARY_IP, "click", "scanner"),
    ("Go-http-client/1.1", ORDINARY_IP, "click", "scanner"),
    ("okhttp/4.12.0", ORDINARY_IP, "open", "scanner"),  # no platform comment: a library
    ("", ORDINARY_IP, "click", "scanner"),
    ("   ", ORDINARY_IP, "open", "scanner"),
    ("Mozilla/5.0", ORDINARY_IP, "click", "scanner"),
    ("Thunderbird/1.0.6 - WebCrawler http://cognitiveseo.com/bot.html", ORDINARY_IP, "open", "scanner"),
])
def test_precedence(ua: str, ip: str, kind: str, expected: str) -> None:
    assert label(ua, ip, kind=kind) == expected


def test_head_is_scanner_whatever_the_rest() -> None:
    for method in ("HEAD", "head"):
        for ua, ip in ((CHROME, ORDINARY_IP), (GMAIL_PROXY, GMAIL_PROXY_IP), ("Mozilla/5.0", APPLE_IP)):
            assert label(ua, ip, method=method) == "scanner"
            assert label(ua, ip, method=method, kind="click") == "scanner"
    assert label(method="GET") == "human"


@pytest.mark.parametrize("purpose", [
    "prefetch", "Prefetch", "prefetch;anonymous-client-ip", "prefetch;prerender", "preview",
    "prerender", "PREFETCH, prefetch",
])
def test_purpose_header_is_prefetch(purpose: str) -> None:
    assert label(purpose=purpose) == "prefetch"
    assert label(SAFARI_IOS, APPLE_IP, purpose=purpose, kind="click") == "prefetch"


def test_no_or_other_purpose_is_not_prefetch() -> None:
    assert label(purpose="") == "human"
    assert label(purpose="navigate") == "human"


def test_self_beats_everything() -> None:
    ctx = HitContext(delivered_at=T0 - timedelta(seconds=1), sender_ips=frozenset({ORDINARY_IP, "2001:DB8:0:0::7"}))
    for ua in (CHROME, "", "curl/8", GMAIL_PROXY):
        for method in ("GET", "HEAD"):
            assert label(ua, ORDINARY_IP, ctx, method=method, kind="click", purpose="prefetch") == "self"
    assert label(CHROME, "2001:db8::7", ctx) == "self"  # canonical forms compare equal
    assert label(CHROME, "::ffff:198.51.100.23", ctx) == "self"
    assert label(CHROME, "198.51.100.24", ctx) == "human"
    assert label(CHROME, ORDINARY_IP, HitContext(T0 - timedelta(hours=1), sender_ips=frozenset())) == "human"


# ---- timing ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds_after_delivery", "expected"), [
    (-30, "scanner"),  # before delivery was even recorded: no reader
    (0, "scanner"),
    (9.9, "scanner"),
    (10, "scanner"),  # the window is inclusive
    (10.1, "human"),
    (3600, "human"),
])
def test_click_near_delivery_is_scanner(seconds_after_delivery: float, expected: str) -> None:
    ctx = HitContext(delivered_at=T0 - timedelta(seconds=seconds_after_delivery))
    assert label(CHROME, kind="click", ctx=ctx) == expected
    assert label(CHROME, kind="open", ctx=ctx) == "human"  # opens are not judged by timing


def test_machine_window_is_configurable_and_delivery_may_be_unknown() -> None:
    ctx = HitContext(delivered_at=T0 - timedelta(seconds=25), machine_window=timedelta(seconds=30))
    assert label(kind="click", ctx=ctx) == "scanner"
    assert label(kind="click", ctx=HitContext(delivered_at=None)) == "human"


def test_burst_over_several_links_is_scanner() -> None:
    earlier = ((T0 - timedelta(seconds=1), 1),)
    assert label(kind="click", position=2, ctx=HitContext(T0 - timedelta(hours=1), recent_clicks=earlier)) == "scanner"
    # the same link twice (a double click) is a person
    assert label(kind="click", position=1, ctx=HitContext(T0 - timedelta(hours=1), recent_clicks=earlier)) == "human"
    slow = ((T0 - timedelta(seconds=3), 1),)
    assert label(kind="click", position=2, ctx=HitContext(T0 - timedelta(hours=1), recent_clicks=slow)) == "human"
    wide = HitContext(T0 - timedelta(hours=1), recent_clicks=slow, burst_window=timedelta(seconds=5))
    assert label(kind="click", position=2, ctx=wide) == "scanner"
    # a click stored a moment *after* this one (out-of-order writes) counts the same
    later = ((T0 + timedelta(seconds=1), 3),)
    assert label(kind="click", position=2, ctx=HitContext(T0 - timedelta(hours=1), recent_clicks=later)) == "scanner"


# ---- garbage never raises --------------------------------------------------------------------

@pytest.mark.parametrize("ua", [
    "A" * 100_000,
    "Mozilla/5.0 (Windows NT 10.0)\x00 Chrome/1",
    "Mozilla/5.0\r\nX-Injected: 1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \u202e\u0000\U0001f600",
    "\udcff\udcfe",  # lone surrogates, as surrogateescape decoding produces
    "(" * 5000 + ")" * 5000,
    "bot" * 400,
])
def test_hostile_user_agents_are_scanner(ua: str) -> None:
    for kind in ("open", "click"):
        assert label(ua, kind=kind) == "scanner"


def test_unicode_user_agent_does_not_crash() -> None:
    assert label("Mozilla/5.0 (Linux; Android 14; Пиксель 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/124.0.0.0 Mobile Safari/537.36") == "human"


@pytest.mark.parametrize("ip", [
    "", "not-an-ip", "999.1.1.1", "1.2.3.4:8080", "[2001:db8::1]", "fe80::1%eth0", " 17.0.0.1 ",
    "17.0.0.1\x00", "::", "0.0.0.0", "ffff" * 1000,
])
def test_odd_addresses_do_not_crash(ip: str) -> None:
    for ua in (CHROME, "Mozilla/5.0", APPLE_MAIL):
        assert label(ua, ip) in CLASSES
    assert label("Mozilla/5.0", " 17.0.0.1 ") == "prefetch"  # surrounding blanks are forgiven


def test_wrong_types_and_naive_datetimes_do_not_crash() -> None:
    naive = datetime(2024, 5, 6, 8, 59, 58)
    ctx = HitContext(delivered_at=naive, sender_ips={"1.2.3.4"},  # type: ignore[arg-type]
                     recent_clicks=((naive, 1), ("garbage",), None))  # type: ignore[arg-type]
    odd = Hit(kind="click", method=None, ip=None, user_agent=None, purpose=None,  # type: ignore[arg-type]
              at=T0, position=2)
    assert classify(odd, ctx, RULES) == "scanner"  # no UA at all
    assert classify(hit(kind="click", position=2), ctx, RULES) == "human"


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.tuples(*[st.integers(0, 999)] * 4).map(lambda t: ".".join(map(str, t))),
    st.tuples(*[st.sampled_from(["0", "00", "01", "7", "255", "256", "\u0661", " 1"])] * 4).map(".".join),
    st.ip_addresses().map(str),
    st.text(max_size=45),
))
def test_fast_ipv4_parse_agrees_with_ipaddress(text: str) -> None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        assert classify_module._ip_info(RULES, text) == (text.strip(), 0)
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    flags = RULES.networks.flags(address.version, int(address))
    assert classify_module._ip_info(RULES, text) == (str(address), flags)


@settings(max_examples=300, deadline=None)
@given(ua=st.text(max_size=300), ip=st.text(max_size=60), kind=st.sampled_from(["open", "click"]),
       method=st.text(max_size=6), purpose=st.text(max_size=40))
def test_any_text_gives_a_class(ua: str, ip: str, kind: str, method: str, purpose: str) -> None:
    assert label(ua, ip, kind=kind, method=method, purpose=purpose) in CLASSES


# ---- speed (measured, printed; not asserted) -------------------------------------------------

def bench(n: int = 4000, repeat: int = 5) -> dict[str, float]:
    """Microseconds per classify() call, best of `repeat` (the machine may be busy): cold =
    a new UA and IP every call (fresh rules, empty caches), warm = the same few hits again."""
    names = (classify_module.UA_FILE, *classify_module.NETWORK_FILES)
    texts = {name: (resources.files("relay") / "data" / name).read_text(encoding="utf-8") for name in names}
    cold = [hit(CHROME.replace("124.0.0.0", f"124.0.{i}.0"), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            for i in range(n)]
    bots = [hit(f"ExampleBot/{i}.0 (+https://example.com/bot)", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            for i in range(n)]
    warm = [hit(ua, ip) for ua, ip in ((CHROME, ORDINARY_IP), (SAFARI_IOS, APPLE_IP), (OUTLOOK, EOP_IP))] * (n // 3)
    result: dict[str, float] = {}
    for name, hits in (("cold browser UA", cold), ("cold other UA", bots), ("warm", warm)):
        best = float("inf")
        for _ in range(repeat):
            rules = parse_rules(texts)
            if name == "warm":
                for h in hits[:3]:
                    classify(h, LONG_AGO, rules)
            start = time.perf_counter()
            for h in hits:
                classify(h, LONG_AGO, rules)
            best = min(best, (time.perf_counter() - start) / len(hits) * 1e6)
        result[name] = best
    return result


def test_bench_runs() -> None:
    result = bench(30, repeat=1)
    assert set(result) == {"cold browser UA", "cold other UA", "warm"}


if __name__ == "__main__":
    for key, micros in bench().items():
        print(f"classify(), {key}: {micros:.1f} us per call")
