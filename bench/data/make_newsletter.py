#!/usr/bin/env python3
"""Write the benchmark's input files into a directory (deterministic, no network, stdlib only).

Usage:  python3 bench/data/make_newsletter.py OUT_DIR

Files written:
  newsletter.eml     ~20 KB multipart/alternative (text + HTML, utf-8, quoted-printable),
                     ~20 tracked http(s) links plus the links a tracker must leave alone
                     (mailto:, tel:, #anchor, unsubscribe), an Outlook VML button inside
                     <!--[if mso]>, &amp; query strings, &nbsp; entities, XHTML doctype,
                     List-Unsubscribe header. This is the message every SMTP run sends.
  newsletter.html    its HTML part, decoded
  digest.eml         a long weekly digest (~80 KB of HTML, ~90 links, 75 MJML-style
                     <!--[if mso | IE]> wrappers): as big as the biggest HTML templates
  digest-attach.eml  the digest plus a 100 KB PDF attachment (base64): the largest file
                     of the set (~220 KB), like the biggest messages real clients send
  pixel.gif          the 43-byte transparent 1x1 GIF (nginx serves it if the relay can't
                     be asked for its own)

Line endings are LF: smtp-source -F appends CRLF to every line itself.
Everything is fixed (Date, Message-ID, boundaries, "random" bytes), so two runs write the
same bytes.
"""
from __future__ import annotations

import hashlib
import sys
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

SHOP = "https://www.nordlicht-outdoor.example"
NEWS = "https://news.nordlicht-outdoor.example"
MAG = "https://magazin.nordlicht-outdoor.example"
CDN = "https://cdn.nordlicht-outdoor.example/img"
UNSUB = f"{NEWS}/abmelden?u=5d2e90b17c&amp;liste=woche&amp;sig=cXV1eA"
UNSUB_RAW = UNSUB.replace("&amp;", "&")
UTM = "utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign={camp}"
FONT = "font-family:Helvetica, Arial, sans-serif;"

# Transparent 1x1 GIF89a: header, logical screen, 2-colour table, graphic control
# extension (transparency), image descriptor, 2 bytes of LZW data, trailer.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

PRODUCTS = [
    ("Vindur Hardshelljacke", "vindur-hardshell-2291", "219,00", "289,00",
     "Dreilagig, 20.000 mm Wassersäule, Helmkapuze – für nasse Tage am Grat."),
    ("Skarð Tourenski 88", "skard-tourenski-88-5502", "449,00", "599,00",
     "Leichter Holzkern mit Carbonstreifen, 88 mm unter der Bindung."),
    ("Hrímfaxi Daunenschlafsack −18 °C", "hrimfaxi-schlafsack-18-0731", "319,00", "399,00",
     "800 cuin Gänsedaune (RDS), Wärmekragen und Zwei-Wege-Reißverschluss."),
    ("Mjöll Merino-Baselayer", "mjoell-merino-baselayer-1180", "69,95", "89,95",
     "200 g/m² Merinowolle aus Tasmanien, flache Nähte, geruchsarm auch nach Tagen."),
    ("Fjallstigur Zustiegsschuh", "fjallstigur-zustieg-3317", "139,00", "169,00",
     "Vibram-Sohle mit Kletterzone vorn, schnell trocknendes Obermaterial."),
    ("Ljós Stirnlampe 450", "ljos-stirnlampe-450-0042", "54,90", "64,90",
     "450 Lumen, rotes Nachtlicht, Akku per USB-C in zwei Stunden voll."),
]
STORIES = [
    ("Spuranlage im Pulverschnee: fünf Tipps von Bergführerin Sanna",
     "spuranlage-pulverschnee", "Warum die flache Spur oft die schnellere ist und wann sich Spitzkehren lohnen."),
    ("Lawinenlagebericht richtig lesen",
     "lawinenlagebericht-lesen", "Gefahrenstufe, Lawinenprobleme, Kernzonen: was die Symbole wirklich sagen."),
    ("Wintercamping am Kjölur – ein Erfahrungsbericht",
     "wintercamping-kjoelur", "Drei Nächte bei minus zwanzig Grad, ein Kocher, der streikt, und viel Tee."),
]


def utm(camp: str, content: str) -> str:
    return UTM.format(camp=camp) + f"&amp;utm_content={content}"


def head(title: str) -> str:
    return f"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" lang="de">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta name="viewport" content="width=device-width, initial-scale=1.0" />
<meta name="format-detection" content="telephone=no, address=no" />
<title>{title}</title>
<!--[if mso]>
<noscript><xml><o:OfficeDocumentSettings><o:AllowPNG/><o:PixelsPerInch>96</o:PixelsPerInch></o:OfficeDocumentSettings></xml></noscript>
<style>td, th, div, p, a {{ font-family: Arial, sans-serif; }}</style>
<![endif]-->
<style type="text/css">
  html, body {{ margin:0 !important; padding:0 !important; width:100% !important; background:#e9eef2; }}
  table {{ border-spacing:0; mso-table-lspace:0pt; mso-table-rspace:0pt; }}
  img {{ border:0; height:auto; line-height:100%; outline:none; text-decoration:none; -ms-interpolation-mode:bicubic; }}
  a[x-apple-data-detectors] {{ color:inherit !important; text-decoration:none !important; }}
  .cta:hover {{ background:#0e4d5c !important; border-color:#0e4d5c !important; }}
  @media screen and (max-width:640px) {{
    .wrap {{ width:100% !important; }}
    .col {{ display:block !important; width:100% !important; max-width:100% !important; }}
    .px {{ padding-left:18px !important; padding-right:18px !important; }}
    .hide-sm {{ display:none !important; mso-hide:all; }}
  }}
</style>
</head>
"""


def preheader(text: str) -> str:
    filler = "&#847;&zwnj;&nbsp;" * 8
    return f"""<body style="margin:0; padding:0; background:#e9eef2;">
<a name="oben" id="oben"></a>
<!-- Vorschautext: im Posteingang sichtbar, in der Mail versteckt -->
<div style="display:none; max-height:0; overflow:hidden; mso-hide:all; font-size:1px; line-height:1px; color:#e9eef2;">
  {text} {filler}
</div>
<center role="article" aria-roledescription="email" lang="de" style="width:100%; background:#e9eef2;">
"""


def topbar(camp: str) -> str:
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0">
  <tr>
    <td class="px" style="padding:8px 28px; {FONT} font-size:11px; color:#5e6b75; text-align:right;">
      Wird diese Mail nicht richtig angezeigt? <a href="{NEWS}/web/{camp}?s=5d2e90b1&amp;sprache=de" style="color:#5e6b75; text-decoration:underline;">Online&nbsp;lesen</a>
    </td>
  </tr>
</table>
<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#ffffff;">
  <tr>
    <td class="px" style="padding:22px 28px; border-bottom:4px solid #156b7d;">
      <a href="{SHOP}/?{utm(camp, 'logo')}" style="text-decoration:none;"><img src="{CDN}/logo-nordlicht@2x.png" width="188" height="36" alt="Nordlicht Outdoor" style="display:block; {FONT} font-size:20px; color:#156b7d;" /></a>
    </td>
  </tr>
</table>
"""


def hero(camp: str, headline: str, lead: str, cta: str, slug: str) -> str:
    url = f"{SHOP}/{slug}?{utm(camp, 'hero')}"
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#ffffff;">
  <tr>
    <td><img src="{CDN}/{camp}/hero-1280.jpg" width="640" height="300" alt="Zwei Skitourengeher im Morgenlicht über dem Nebelmeer" style="display:block; width:100%; max-width:640px;" /></td>
  </tr>
  <tr>
    <td class="px" style="padding:28px 28px 8px; {FONT}">
      <h1 style="margin:0 0 12px; font-size:27px; line-height:33px; color:#18242c; font-weight:700;">{headline}</h1>
      <p style="margin:0; font-size:16px; line-height:25px; color:#3a4750;">{lead}</p>
    </td>
  </tr>
  <tr>
    <td class="px" align="center" style="padding:22px 28px 30px;">
      <!--[if mso]>
      <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" xmlns:w="urn:schemas-microsoft-com:office:word" href="{url}" style="height:48px; v-text-anchor:middle; width:260px;" arcsize="10%" strokecolor="#156b7d" fillcolor="#156b7d">
        <w:anchorlock/>
        <center style="color:#ffffff; font-family:Arial, sans-serif; font-size:16px; font-weight:bold;">{cta}</center>
      </v:roundrect>
      <![endif]-->
      <!--[if !mso]><!-->
      <a class="cta" href="{url}" style="background:#156b7d; border:1px solid #156b7d; border-radius:5px; color:#ffffff; display:inline-block; {FONT} font-size:16px; font-weight:bold; line-height:48px; text-align:center; text-decoration:none; width:260px; -webkit-text-size-adjust:none;">{cta}&nbsp;&rsaquo;</a>
      <!--<![endif]-->
    </td>
  </tr>
</table>
"""


def product_row(camp: str, items: list[tuple[str, str, str, str, str]], row: int) -> str:
    cells = []
    for i, (name, slug, price, was, blurb) in enumerate(items):
        url = f"{SHOP}/p/{slug}?farbe=petrol&amp;{utm(camp, f'produkt-{row}-{i}')}"
        cells.append(f"""      <!--[if mso | IE]><td width="292" valign="top"><![endif]-->
      <div class="col" style="display:inline-block; width:100%; max-width:292px; vertical-align:top; text-align:left; {FONT}">
        <div style="padding:0 8px 22px;">
          <a href="{url}"><img src="{CDN}/p/{slug}-584.jpg" width="276" height="276" alt="{name}" style="display:block; width:100%; background:#f2f5f7;" /></a>
          <p style="margin:8px 0 0; font-size:16px; line-height:22px; font-weight:700;"><a href="{url}" style="color:#18242c; text-decoration:none;">{name}</a></p>
          <p style="margin:4px 0 0; font-size:14px; line-height:20px; color:#53616b;">{blurb}</p>
          <p style="margin:6px 0 0; font-size:16px; color:#b3261e; font-weight:700;">{price}&nbsp;&euro; <span style="color:#8a969e; font-weight:400; text-decoration:line-through; font-size:13px;">{was}&nbsp;&euro;</span></p>
          <p style="margin:10px 0 0; font-size:14px;"><a href="{url}&amp;ziel=warenkorb" style="color:#156b7d; font-weight:700; text-decoration:none;">In den Warenkorb &rarr;</a></p>
        </div>
      </div>
      <!--[if mso | IE]></td><![endif]-->""")
    body = "\n".join(cells)
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#ffffff;">
  <tr>
    <td class="px" style="padding:0 20px; font-size:0; text-align:center;">
      <!--[if mso | IE]><table role="presentation" width="584" cellpadding="0" cellspacing="0"><tr><![endif]-->
{body}
      <!--[if mso | IE]></tr></table><![endif]-->
    </td>
  </tr>
</table>
"""


def courses() -> str:
    """A block of plain prose (no links): newsletters are not only markup."""
    rows = "".join(
        f"""    <tr><td style="padding:5px 0; {FONT} font-size:14px; line-height:20px; color:#3a4750; border-bottom:1px solid #e3e8eb;"><strong>{d}</strong> &ndash; {t}</td></tr>\n"""
        for d, t in (
            ("7.–8. Dezember", "Einsteigerkurs Skitour im Sudelfeld: Aufstiegstechnik, LVS-Suche, Spitzkehren"),
            ("14. Dezember", "Lawinenkunde kompakt in Garmisch: Schneeprofil, Hangneigung, Entscheidungsstrategien"),
            ("21.–22. Dezember", "Wintercamping am Spitzingsee: Zeltplatz im Schnee, Kochen bei Frost, Schlafkomfort"),
            ("28. Dezember", "Schneeschuh-Vollmondtour am Wendelstein mit Hüttenabend und Rückweg mit Stirnlampe"),
        ))
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#ffffff;">
  <tr><td class="px" style="padding:0 28px 24px;">
    <table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
{rows}    </table>
    <p style="margin:12px 0 0; {FONT} font-size:13px; line-height:19px; color:#6b7780;">Alle Kurse mit staatlich geprüften Berg- und Skiführer:innen, Leihausrüstung inklusive. Anmeldung im Laden oder telefonisch; die Plätze sind begrenzt.</p>
  </td></tr>
</table>
"""


def section_title(text: str) -> str:
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#ffffff;">
  <tr><td class="px" style="padding:26px 28px 14px; {FONT} font-size:13px; letter-spacing:2px; text-transform:uppercase; color:#156b7d; font-weight:700;">{text}</td></tr>
</table>
"""


def story(camp: str, title: str, slug: str, teaser: str, n: int) -> str:
    url = f"{MAG}/artikel/{slug}?{utm(camp, f'magazin-{n}')}"
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#f6f8f9;">
  <tr>
    <td class="px" style="padding:18px 28px; border-top:1px solid #dde3e7; {FONT}">
      <p style="margin:0 0 6px; font-size:18px; line-height:24px; font-weight:700;"><a href="{url}" style="color:#18242c; text-decoration:none;">{title}</a></p>
      <p style="margin:0; font-size:15px; line-height:22px; color:#46535c;">{teaser}</p>
    </td>
  </tr>
</table>
"""


def footer(camp: str) -> str:
    socials = "".join(
        f'<a href="https://{host}/nordlichtoutdoor" style="display:inline-block; padding:0 6px;">'
        f'<img src="{CDN}/icons/{name}-40.png" width="20" height="20" alt="{name}" /></a>'
        for host, name in (("www.instagram.example", "Instagram"), ("www.mastodon.example", "Mastodon"))
    )
    return f"""<table role="presentation" class="wrap" align="center" width="640" cellpadding="0" cellspacing="0" border="0" style="background:#18242c;">
  <tr>
    <td class="px" align="center" style="padding:24px 28px 6px;">{socials}</td>
  </tr>
  <tr>
    <td class="px" style="padding:12px 28px 26px; {FONT} font-size:12px; line-height:19px; color:#aab6bd; text-align:center;">
      Fragen zur Bestellung? <a href="tel:+4989987654321" style="color:#ffffff;">089&nbsp;987&nbsp;654&nbsp;321</a> (Mo–Fr 8–18 Uhr)
      oder <a href="mailto:hilfe@nordlicht-outdoor.example?subject=Frage%20zum%20Newsletter" style="color:#ffffff;">hilfe@nordlicht-outdoor.example</a><br />
      Nordlicht Outdoor GmbH &middot; Lindwurmstraße 42 &middot; 80337 München &middot; HRB 998877<br />
      <a href="{SHOP}/impressum" style="color:#aab6bd;">Impressum</a> &middot;
      <a href="{SHOP}/datenschutz" style="color:#aab6bd;">Datenschutz</a> &middot;
      <a href="{UNSUB}" style="color:#aab6bd;">Vom Newsletter abmelden</a><br />
      <a href="#oben" style="color:#aab6bd;">Nach oben</a>
    </td>
  </tr>
</table>
</center>
</body>
</html>
"""


def newsletter_html() -> str:
    camp = "winter-2024-kw47"
    parts = [
        head("Nordlicht Outdoor – Tourenwinter: bis zu 25 % auf Ski &amp; Schlafsäcke"),
        preheader("Tourenski, Daunen und Stirnlampen bis −25 % – und wie man den Lawinenbericht liest."),
        topbar(camp),
        hero(camp, "Der Tourenwinter beginnt jetzt",
             "Die ersten Gipfel sind eingeschneit. Bis Sonntag, 24. November, sparst du bis zu "
             "25&nbsp;% auf ausgewählte Ski, Schlafsäcke und Schichten – Club-Mitglieder bekommen "
             "mit dem Code <strong>SPUR15</strong> noch 15&nbsp;&euro; extra ab 150&nbsp;&euro;.",
             "Zur Winter-Auswahl", "winter/touren"),
        section_title("Unsere Empfehlungen"),
        product_row(camp, PRODUCTS[0:2], 0),
        product_row(camp, PRODUCTS[2:4], 1),
        section_title("Aus dem Magazin"),
        story(camp, *STORIES[0], 0),
        footer(camp),
    ]
    return "".join(parts)


def digest_html() -> str:
    """A long digest: 24 product cards (12 rows), every story, MJML-style wrappers."""
    camp = "wochenrueckblick-2024-47"
    parts = [
        head("Nordlicht Outdoor – Wochenrückblick: alles Neue aus Shop &amp; Magazin"),
        preheader("Alle Neuheiten der Woche, drei Geschichten aus dem Magazin und die Termine der Tourenkurse."),
        topbar(camp),
        hero(camp, "Alles Neue dieser Woche",
             "24 neue Artikel im Shop, drei Geschichten aus dem Magazin und die Termine unserer "
             "Tourenkurse im Dezember. Viel Spaß beim Stöbern – und gute Spuren!",
             "Alle Neuheiten ansehen", "neu"),
    ]
    for block in range(4):
        parts.append(section_title(f"Neu im Shop – Teil {block + 1}"))
        for row in range(3):
            k = (block * 3 + row) * 2
            items = [PRODUCTS[k % 6], PRODUCTS[(k + 1) % 6]]
            items = [(n, f"{s}-{k + j}", p, w, b) for j, (n, s, p, w, b) in enumerate(items)]
            parts.append(product_row(camp, items, block * 3 + row))
        parts.append(section_title("Tourenkurse im Dezember"))
        parts.append(courses())
        parts.append(section_title("Aus dem Magazin"))
        for n, st in enumerate(STORIES):
            parts.append(story(camp, st[0], f"{st[1]}-{block}", st[2], block * 3 + n))
    parts.append(footer(camp))
    return "".join(parts)


TEXT = """\
Hallo Sanna,

der Tourenwinter beginnt jetzt: bis Sonntag, 24. November, sparst du bis zu 25 %
auf ausgewählte Ski, Schlafsäcke und Schichten. Club-Mitglieder bekommen mit dem
Code SPUR15 noch 15 € extra ab 150 € Bestellwert.

Zur Winter-Auswahl:
{shop}/winter/touren?utm_source=newsletter&utm_medium=email&utm_campaign=winter-2024-kw47

* Vindur Hardshelljacke – 219,00 € statt 289,00 €
  {shop}/p/vindur-hardshell-2291?utm_source=newsletter&utm_medium=email
* Skarð Tourenski 88 – 449,00 € statt 599,00 €
  {shop}/p/skard-tourenski-88-5502?utm_source=newsletter&utm_medium=email

Aus dem Magazin: Spuranlage im Pulverschnee
{mag}/artikel/spuranlage-pulverschnee

Fragen? 089 987 654 321 oder hilfe@nordlicht-outdoor.example

--
Nordlicht Outdoor GmbH · Lindwurmstraße 42 · 80337 München
Abmelden: {unsub}
"""


def build_message(html: str, subject: str, message_id: str, boundary: str,
                  attachment: bytes | None = None) -> bytes:
    msg = EmailMessage(policy=default)
    msg["From"] = '"Nordlicht Outdoor" <news@nordlicht-outdoor.example>'
    msg["To"] = '"Sanna Virtanen" <sanna.virtanen@example.org>'
    msg["Subject"] = subject
    msg["Date"] = "Thu, 21 Nov 2024 07:45:00 +0100"
    msg["Message-ID"] = message_id
    msg["Reply-To"] = "hilfe@nordlicht-outdoor.example"
    msg["X-Mailer"] = "nordlicht-mailer 3.2"
    msg.set_content(TEXT.format(shop=SHOP, mag=MAG, unsub=UNSUB_RAW), subtype="plain",
                    charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    if attachment is not None:
        msg.make_mixed()
        msg.add_attachment(attachment, maintype="application", subtype="pdf",
                           filename="Tourenkurse-Dezember-2024.pdf")
        msg.get_payload()[0].set_boundary(boundary + "_alt")
        msg.set_boundary(boundary + "_mix")
    else:
        msg.set_boundary(boundary)
    data = msg.as_bytes(policy=default.clone(linesep="\n"))
    # List-Unsubscribe stays a plain (not RFC 2047-encoded) header: insert it pre-folded
    lu = (f"List-Unsubscribe: <{UNSUB_RAW}>,\n"
          " <mailto:abmelden@nordlicht-outdoor.example?subject=abmelden-5d2e90b17c>\n"
          "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n").encode()
    anchor = b"\nX-Mailer:"
    return data.replace(anchor, b"\n" + lu + anchor[1:], 1)


def fake_pdf(size: int) -> bytes:
    """Deterministic incompressible bytes behind a PDF header (stands in for a real attachment)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    block = b"nordlicht"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    html = newsletter_html()
    (out / "newsletter.html").write_text(html, encoding="utf-8")
    files = {
        "newsletter.eml": build_message(
            html, "❄️ Tourenwinter: bis zu 25 % auf Ski & Schlafsäcke – nur bis Sonntag",
            "<20241121074500.5d2e90b1@mail.nordlicht-outdoor.example>", "=_nordlicht_alt_2b7e61c09d"),
        "digest.eml": build_message(
            digest_html(), "Wochenrückblick KW 47: alles Neue aus Shop & Magazin",
            "<20241121074500.9a01c3f4@mail.nordlicht-outdoor.example>", "=_nordlicht_digest_4c1d"),
        "digest-attach.eml": build_message(
            digest_html(), "Wochenrückblick KW 47 mit Kursprogramm (PDF)",
            "<20241121074500.9a01c3f5@mail.nordlicht-outdoor.example>", "=_nordlicht_digest_8e2f",
            attachment=fake_pdf(100_000)),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "pixel.gif").write_bytes(PIXEL_GIF)
    sizes = ", ".join(f"{n} {len(d)} B" for n, d in files.items())
    print(f"data: {sizes}; newsletter.html {len(html.encode())} B; pixel.gif {len(PIXEL_GIF)} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
