"""The panel's two languages: English (the source strings) and Hungarian (one catalog,
admin/locale/hu/LC_MESSAGES/messages.po, read at start). The language of a request is the
user's setting, else the best of the browser's Accept-Language, else English; it lives in
a context variable, so requests in different languages never mix.

After changing strings, update the catalog as README ("The panel", Languages) shows.
"""
from __future__ import annotations

import contextvars
import gettext as stdlib_gettext
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "hu")
DEFAULT = "en"


def _load(language: str) -> stdlib_gettext.NullTranslations:
    if language == "en":
        return stdlib_gettext.NullTranslations()
    with open(LOCALE_DIR / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


_CATALOGS = {language: _load(language) for language in LANGUAGES}
_current: contextvars.ContextVar[str] = contextvars.ContextVar("panel_language", default=DEFAULT)
_zone: contextvars.ContextVar[str] = contextvars.ContextVar("panel_zone", default="")


def use(language: str, zone_name: str = "") -> None:
    """The language and time zone of what this request (task) says from now on."""
    _current.set(language if language in LANGUAGES else DEFAULT)
    _zone.set(zone_name)


def current() -> str:
    return _current.get()


def template_gettext(message: str) -> str:
    """For Jinja2's newstyle gettext, which fills in the values itself (escaping them)."""
    return _CATALOGS[_current.get()].gettext(message)


def template_ngettext(singular: str, plural: str, n: int) -> str:
    return _CATALOGS[_current.get()].ngettext(singular, plural, n)


def gettext(message: str, **values: object) -> str:
    text = _CATALOGS[_current.get()].gettext(message)
    return text % values if values else text


def ngettext(singular: str, plural: str, n: int, **values: object) -> str:
    text = _CATALOGS[_current.get()].ngettext(singular, plural, n)
    return text % {"num": n, **values}


_ = gettext


def N_(message: str) -> str:
    """Marks a string for the catalog where it is defined; _() translates it where it is shown."""
    return message


def choose(setting: str, accept_language: str) -> str:
    """The user's own choice; else the first language of Accept-Language we speak; else English."""
    if setting in LANGUAGES:
        return setting
    wanted = []
    for part in accept_language.split(",")[:20]:
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        wanted.append((quality, tag.strip().lower().split("-")[0]))
    for quality, language in sorted(wanted, key=lambda w: -w[0]):
        if language in LANGUAGES and quality > 0:
            return language
    return DEFAULT


def zone(name: str) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name) if name else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def local_time(ts: float) -> str:
    """A time for people, in their zone and language (e.g. '2026. dec. 4. 15:30:33 CET')."""
    where = zone(_zone.get())
    moment = datetime.fromtimestamp(ts, timezone.utc)
    shown = format_datetime(moment, "medium", tzinfo=where, locale=Locale.parse(current()))
    return f"{shown} {moment.astimezone(where).strftime('%Z')}"


def ago(ts: float, now: float) -> str:
    """'3 minutes ago' / '3 perccel ezelőtt'."""
    return format_timedelta(ts - now, add_direction=True, locale=Locale.parse(current()))


def number(n: int) -> str:
    """A count for people: 12,345 / 12 345."""
    return format_decimal(n, locale=Locale.parse(current()))
