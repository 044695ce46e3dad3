"""Label a tracking hit human, proxy, prefetch, scanner or self. No I/O.

The one exception is load_rules(), which reads the packaged pattern and network files
under relay/data/ (once); everything else takes plain values and returns a plain value.

Order of the checks in classify() (the first that applies decides):

 1. self      the IP is one the sender used (ctx.sender_ips). First, because a sender
              looking at their own mail must never count as a reader, whatever it looks like.
 2. scanner   a HEAD request: showing an image or a page needs the body; link checkers don't.
 3. prefetch  a Sec-Purpose/Purpose/X-Purpose/X-Moz header saying prefetch/preview/prerender.
 4. by user agent alone, when it settles the matter: empty, oversized (> 1 KB) or with
              control characters -> scanner; a mail provider's image proxy -> proxy (a Gmail
              proxy open stays proxy although it comes from Google); the privacy prefetch
              proxy -> prefetch; a self-identifying bot, tool or previewer, or a UA with no
              "(platform)" comment that is no known app -> scanner.
 5. scanner   a mail-security network (Exchange Online Protection, Barracuda) or a crawler
              network (Googlebot, Bingbot): these send ordinary browser UAs, so only the
              network gives them away.
 6. prefetch  an Apple network (17.0.0.0/8, iCloud Private Relay egress) with a generic UA
              (bare "Mozilla/5.0", or Apple Mail's WebKit UA without a Safari token): Mail
              Privacy Protection. A Safari UA from there is a person and stays human.
 7. proxy     an open from a mail provider's image-proxy network; a click from there is no
              reader's browser -> scanner.
 8. scanner   a click within ctx.machine_window of delivery (or before it), or within
              ctx.burst_window of a click on another link of the same copy.
 9. the generic UAs outside Apple's networks: a bare "Mozilla/5.0" open is MPP all the same
              (the network lists are a hint, not proof) -> prefetch, a bare-UA click is a
              script -> scanner; Apple Mail's stripped UA opening within the machine window
              is a privacy fetcher at delivery (warmbly/warmbly#569) -> prefetch.
10. human     everything else: browsers, Outlook, Thunderbird, Apple Mail opening later, ...

classify() never raises on garbage (invalid IPs, huge or binary UAs, naive datetimes).
"""
from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache, partial
from importlib import resources

from relay.netaddr import Network, parse_ip

HUMAN, PROXY, PREFETCH, SCANNER, SELF = "human", "proxy", "prefetch", "scanner", "self"
CLASSES = (HUMAN, PROXY, PREFETCH, SCANNER, SELF)

UA_FILE = "user-agents.txt"
NETWORK_FILES = {  # file in relay/data -> network kind
    "apple-networks.txt": "apple",
    "scanner-networks.txt": "scanner",
    "crawler-networks.txt": "scanner",
    "proxy-networks.txt": "proxy",
}
UA_SECTIONS = ("proxy", "prefetch", "mpp", "stripped-webkit", "scanner", "mail-client", "plain-app")

MAX_UA = 1024  # real browsers stay under ~500 characters; longer is a fuzzer or a tool
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Exact shapes of today's mainstream browser UAs (lower-cased). Most hits carry one; a full
# match leaves no room for a bot's name (only version numbers vary), so the ~300-pattern
# search can be skipped: ~1 us instead of ~8 us. Anything else takes the full search.
_COMMON_BROWSER = re.compile(
    r"mozilla/5\.0 \("
    r"(?:windows nt \d+\.\d+(?:; win64; x64|; wow64)?|macintosh; intel mac os x \d+[_.]\d+(?:[_.]\d+)?"
    r"|x11; (?:ubuntu; )?linux x86_64|x11; cros (?:x86_64|aarch64|armv7l) [\d.]+"
    r"|linux; android [\d.]+(?:; k)?|android [\d.]+; mobile"
    r"|(?:iphone; cpu iphone os|ipad; cpu os) [\d_]+ like mac os x)"
    r"(?:; rv:[\d.]+\) gecko/[\d.]+ firefox/[\d.]+"
    r"|\) applewebkit/[\d.]+ \(khtml, like gecko\) (?:"
    r"(?:samsungbrowser/[\d.]+ )?chrome/[\d.]+ (?:mobile )?safari/[\d.]+(?: (?:edg|opr)/[\d.]+)?"
    r"|version/[\d.]+ (?:mobile/\d+[a-z]\d+ )?safari/[\d.]+"
    r"|(?:crios|fxios|gsa)/[\d.]+ mobile/\d+[a-z]\d+ safari/[\d.]+))"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zeros, like ipaddress
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_PURPOSE = re.compile(r"prefetch|preview|prerender", re.IGNORECASE)

# what the user agent alone says (internal; classify() turns it into a class)
_UA_MPP, _UA_WEBKIT, _UA_PERSON = "mpp", "webkit", "person"
_APPLE, _SCANNER_NET, _PROXY_NET = 1, 2, 4  # bit flags of an IP's networks
_DECISIVE = ("proxy", "prefetch", "mpp", "scanner", "mail-client")


@dataclass(frozen=True, kw_only=True)
class Hit:
    """One GET/HEAD on a known token. Keyword-only: `at` is required but listed after a default."""

    kind: str  # "open" | "click"
    method: str  # "GET" | "HEAD"
    ip: str  # the client's full address, before any anonymisation
    user_agent: str  # as received; may be empty, huge or hostile
    purpose: str = ""  # Sec-Purpose / Purpose / X-Purpose / X-Moz values, joined
    at: datetime  # aware UTC
    position: int | None = None  # link position, for clicks


@dataclass(frozen=True)
class HitContext:
    delivered_at: datetime | None  # when this copy was handed upstream
    sender_ips: frozenset[str] = frozenset()  # the sender's submission/panel IPs, last 30 days
    recent_clicks: tuple[tuple[datetime, int], ...] = ()  # earlier clicks (at, position), same copy
    machine_window: timedelta = timedelta(seconds=10)
    burst_window: timedelta = timedelta(seconds=2)


class _Matcher:
    """OR of regex patterns, compiled for speed.

    Python's re tries every branch of an alternation at every position, so 300 names cost
    ~150 us per UA. Patterns that start with a literal are folded into one prefix tree, where
    each position costs one branch per distinct first character (~10 us); ^-anchored ones
    are tried at position 0 only.
    """

    __slots__ = ("_anchored", "_body")

    def __init__(self, patterns: Iterable[str]) -> None:
        anchored: list[str] = []
        loose: list[str] = []
        literal_led: list[tuple[str, str]] = []
        for pattern in patterns:
            for alternative in _split_alternatives(pattern):
                if alternative.startswith("^"):
                    anchored.append(alternative[1:])
                    continue
                literal, tail = _literal_prefix(alternative)
                if literal:
                    literal_led.append((literal, tail))
                else:
                    loose.append(alternative)
        body = ([_prefix_tree(literal_led)] if literal_led else []) + loose
        self._anchored = re.compile("|".join(anchored)).match if anchored else None
        self._body = re.compile("|".join(body)).search if body else None

    def __call__(self, text: str) -> bool:
        return bool(
            (self._anchored is not None and self._anchored(text))
            or (self._body is not None and self._body(text))
        )


def _split_alternatives(pattern: str) -> list[str]:
    """Split a regex at its top-level '|' (not inside groups or character classes)."""
    parts, depth, in_class, start, i = [], 0, False, 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return [p for p in parts if p]


_META = frozenset(".^$*+?{}[]\\|()")


def _literal_prefix(alternative: str) -> tuple[str, str]:
    """('googlebot', '(?:/|$)') from 'googlebot(?:/|$)': the leading literal text and the rest."""
    literal: list[str] = []
    i = 0
    while i < len(alternative):
        char, step = alternative[i], 1
        if char == "\\":
            if i + 1 >= len(alternative) or alternative[i + 1].isalnum():
                break  # \d, \b, \w ...: not a literal
            char, step = alternative[i + 1], 2
        elif char in _META:
            break
        if alternative[i + step : i + step + 1] in ("?", "*", "+", "{"):
            break  # a quantified character is not part of the fixed prefix
        literal.append(char)
        i += step
    return "".join(literal), alternative[i:]


def _prefix_tree(items: list[tuple[str, str]]) -> str:
    root: dict = {}
    for literal, tail in items:
        node = root
        for char in literal:
            node = node.setdefault(char, {})
        node.setdefault("", set()).add(tail)

    def emit(node: dict) -> str:
        tails = node.get("", set())
        if "" in tails:
            return ""  # a bare literal ends here: anything longer would only match more rarely
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        branches += [f"(?:{tail})" for tail in sorted(tails)]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(root)


class _NetworkTable:
    """Which kinds of network (bit flags) an address is in.

    All ranges are cut into disjoint segments, each carrying the OR of its kinds' flags, so a
    lookup is one bisect over sorted integer starts whatever the number of lists.
    """

    __slots__ = ("_segments",)

    def __init__(self, by_flag: Mapping[int, Iterable[Network]]) -> None:
        self._segments: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            events: list[tuple[int, int, int]] = []
            for flag, networks in by_flag.items():
                for net in ipaddress.collapse_addresses(n for n in networks if n.version == version):
                    events.append((int(net.network_address), 1, flag))
                    events.append((int(net.broadcast_address) + 1, -1, flag))
            events.sort()
            depth: dict[int, int] = {flag: 0 for flag in by_flag}
            starts: list[int] = []
            flags: list[int] = []
            for point, delta, flag in events:
                depth[flag] += delta
                value = sum(f for f, d in depth.items() if d > 0)
                if starts and starts[-1] == point:
                    flags[-1] = value
                else:
                    starts.append(point)
                    flags.append(value)
            self._segments[version] = (starts, flags)

    def flags(self, version: int, value: int) -> int:
        starts, flags = self._segments[version]
        i = bisect_right(starts, value) - 1
        return flags[i] if i >= 0 else 0


@dataclass(frozen=True, eq=False)
class Rules:
    """Compiled user-agent patterns (by section) and network sets (by kind)."""

    ua: Mapping[str, _Matcher]
    networks: _NetworkTable
    # per-rules caches: the hot path sees the same few hundred UAs and IPs again and again
    _ua_verdict: Callable[[str], str] = field(init=False, repr=False)
    _ip_info: Callable[[str], tuple[str, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ua_verdict", lru_cache(maxsize=4096)(partial(_ua_verdict, self)))
        object.__setattr__(self, "_ip_info", lru_cache(maxsize=65536)(partial(_ip_info, self)))


def parse_rules(files: Mapping[str, str]) -> Rules:
    """Rules from the texts of the data files, keyed by file name (UA_FILE, NETWORK_FILES)."""
    sections: dict[str, list[str]] = {name: [] for name in UA_SECTIONS}
    current: list[str] | None = None
    for number, raw in enumerate(files.get(UA_FILE, "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            if line[1:-1] not in sections:
                raise ValueError(f"{UA_FILE}:{number}: unknown section {line}")
            current = sections[line[1:-1]]
        elif current is None:
            raise ValueError(f"{UA_FILE}:{number}: pattern outside a section")
        else:
            try:  # a broken pattern should name its line, not fail inside the prefix tree
                re.compile(line)
            except re.error as exc:
                raise ValueError(f"{UA_FILE}:{number}: {exc}") from None
            current.append(line)
    kinds: dict[str, list[Network]] = {kind: [] for kind in set(NETWORK_FILES.values())}
    for name, kind in NETWORK_FILES.items():
        for number, raw in enumerate(files.get(name, "").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if line:
                try:
                    kinds[kind].append(ipaddress.ip_network(line.split()[0], strict=False))
                except ValueError as exc:
                    raise ValueError(f"{name}:{number}: {exc}") from None
    ua = {name: _Matcher(patterns) for name, patterns in sections.items()}
    # one pass answers "does any decisive pattern match?": the usual browser UA needs no more
    ua["any"] = _Matcher(p for name in _DECISIVE for p in sections[name])
    flags = {_APPLE: kinds["apple"], _SCANNER_NET: kinds["scanner"], _PROXY_NET: kinds["proxy"]}
    return Rules(ua=ua, networks=_NetworkTable(flags))


@cache
def load_rules() -> Rules:
    """The packaged rules (relay/data/*), read once per process."""
    data = resources.files("relay") / "data"
    names = [UA_FILE, *NETWORK_FILES]
    return parse_rules({name: (data / name).read_text(encoding="utf-8") for name in names})


def classify(hit: Hit, ctx: HitContext, rules: Rules) -> str:
    """One of CLASSES for this hit; see the module docstring for the order of the checks."""
    raw_ip = hit.ip if isinstance(hit.ip, str) else ""
    ip, nets = rules._ip_info(raw_ip)
    if ctx.sender_ips and _is_sender(raw_ip, ip, ctx.sender_ips):
        return SELF
    if isinstance(hit.method, str) and hit.method.upper() == "HEAD":
        return SCANNER
    if hit.purpose and isinstance(hit.purpose, str) and _PURPOSE.search(hit.purpose[:512]):
        return PREFETCH

    ua = hit.user_agent if isinstance(hit.user_agent, str) else ""
    verdict = SCANNER if len(ua) > MAX_UA else rules._ua_verdict(ua)
    if verdict in (SCANNER, PROXY, PREFETCH):
        return verdict
    if nets & _SCANNER_NET:
        return SCANNER
    generic = verdict in (_UA_MPP, _UA_WEBKIT)
    if generic and nets & _APPLE:
        return PREFETCH
    is_click = hit.kind == "click"
    if nets & _PROXY_NET:
        return SCANNER if is_click else PROXY
    at_delivery = _at_delivery(hit.at, ctx)
    if is_click and (at_delivery or _in_burst(hit, ctx)):
        return SCANNER
    if verdict == _UA_MPP:
        return SCANNER if is_click else PREFETCH
    if verdict == _UA_WEBKIT and not is_click and at_delivery:
        return PREFETCH
    return HUMAN


def _ua_verdict(rules: Rules, ua: str) -> str:
    if not ua or len(ua) > MAX_UA or _CONTROL.search(ua):
        return SCANNER
    low = ua.strip().lower()
    if not low:
        return SCANNER
    if _COMMON_BROWSER.fullmatch(low):
        return _UA_PERSON
    return _ua_sections(rules, low)


def _ua_sections(rules: Rules, low: str) -> str:
    match = rules.ua
    if match["any"](low):  # rarely true; then find the section, in order of priority
        if match["proxy"](low):
            return PROXY
        if match["prefetch"](low):
            return PREFETCH
        if match["mpp"](low):
            return _UA_MPP
        if match["scanner"](low):  # before mail clients: "Thunderbird/1.0.6 - WebCrawler" is a bot
            return SCANNER
        return _UA_PERSON  # a known mail client
    if match["stripped-webkit"](low):
        return _UA_WEBKIT
    if "(" not in low and not match["plain-app"](low):
        return SCANNER  # "okhttp/4.9", "Zabbix": no platform comment, so no browser or app
    return _UA_PERSON


def _ip_info(rules: Rules, text: str) -> tuple[str, int]:
    """(canonical text, network flags) of an IP; invalid text: (stripped text, 0)."""
    stripped = text.strip()
    if _IPV4.fullmatch(stripped):  # the usual case, 3x faster than ipaddress's parser
        a, b, c, d = map(int, stripped.split("."))
        return stripped, rules.networks.flags(4, a << 24 | b << 16 | c << 8 | d)
    address = parse_ip(stripped)
    if address is None:
        return stripped, 0
    return str(address), rules.networks.flags(address.version, int(address))


def _is_sender(raw_ip: str, ip: str, sender_ips: Iterable[str]) -> bool:
    if isinstance(sender_ips, str):  # one address handed over bare: not a substring test
        sender_ips = (sender_ips,)
    try:
        if raw_ip in sender_ips:
            return True
        ips = sender_ips if isinstance(sender_ips, frozenset) else frozenset(sender_ips)
    except TypeError:  # not a collection of strings: nobody to recognise
        return False
    return ip in _canonical_set(ips)


@lru_cache(maxsize=1024)
def _canonical_set(ips: frozenset[str]) -> frozenset[str]:
    # the store may hand over "2001:DB8::1" or "::ffff:192.0.2.1"; compare canonical forms
    canonical = set()
    for ip in ips:
        if isinstance(ip, str):
            address = parse_ip(ip)
            canonical.add(ip.strip() if address is None else str(address))
    return frozenset(canonical)


def _at_delivery(at: datetime, ctx: HitContext) -> bool:
    """At most machine_window after delivery; a hit before delivery is a machine too."""
    if ctx.delivered_at is None:
        return False
    try:
        return at - ctx.delivered_at <= ctx.machine_window
    except TypeError:  # naive vs aware datetimes: no verdict rather than a crash
        return False


def _in_burst(hit: Hit, ctx: HitContext) -> bool:
    """A click on another link of the same copy within burst_window: nobody clicks that fast."""
    for entry in ctx.recent_clicks or ():
        try:
            at, position = entry
            if position != hit.position and abs(hit.at - at) <= ctx.burst_window:
                return True
        except (TypeError, ValueError):
            continue
    return False
