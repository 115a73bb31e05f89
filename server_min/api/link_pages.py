"""The web pages of read-only links: server-rendered HTML, no script, no external asset, readable on a
phone. Every name from a box is HTML-escaped; the Content-Security-Policy allows only our own style."""

from __future__ import annotations

import base64
import hashlib
import html
import time
from typing import Any
from urllib.parse import quote

from box_common.units import format_size

STYLE = """
:root{color-scheme:light dark;--fg:#1d2430;--muted:#5b6675;--bg:#f5f7fa;--card:#fff;--line:#dde3ea;--accent:#0b63ce}
@media (prefers-color-scheme:dark){:root{--fg:#e8edf3;--muted:#9aa6b4;--bg:#10151c;--card:#18202a;--line:#2a3542;
--accent:#4c9dff}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{max-width:44rem;margin:0 auto;padding:1.25rem 1rem 3rem}
header{display:flex;align-items:center;gap:.5rem;color:var(--muted);font-size:.9rem;margin-bottom:1rem}
.logo{font-weight:700;color:var(--accent);letter-spacing:.02em}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1.25rem}
h1{font-size:1.35rem;margin:0 0 .25rem;overflow-wrap:anywhere}
.meta{color:var(--muted);margin:0 0 1rem}
.button{display:inline-block;background:var(--accent);color:#fff;text-decoration:none;font-weight:600;
padding:.7rem 1.2rem;border-radius:8px;min-height:44px}
.button:focus,.button:hover{filter:brightness(1.1)}
ul{list-style:none;margin:1rem 0 0;padding:0}
li{display:flex;align-items:center;gap:.75rem;padding:.65rem 0;border-top:1px solid var(--line)}
li .name{flex:1;min-width:0;overflow-wrap:anywhere}
li .name a{color:var(--fg)}
li .size{color:var(--muted);font-size:.9rem;white-space:nowrap}
li .get{color:var(--accent);font-weight:600;text-decoration:none;white-space:nowrap;padding:.4rem 0}
.crumbs{font-size:.9rem;color:var(--muted);margin-bottom:.5rem;overflow-wrap:anywhere}
.crumbs a{color:var(--accent)}
.icon{flex:none;width:1.1rem;height:1.3rem;border-radius:2px;border:2px solid var(--muted);position:relative}
.icon.dir{height:.95rem;margin-top:.2rem;background:var(--accent);border-color:var(--accent);border-radius:3px}
.icon.dir:before{content:"";position:absolute;left:-2px;top:-.35rem;width:.5rem;height:.3rem;background:var(--accent);
border-radius:2px 2px 0 0}
.icon.link{border-style:dashed}
.code{font-size:3rem;font-weight:700;color:var(--muted);margin:0}
footer{margin-top:1.5rem;color:var(--muted);font-size:.8rem;text-align:center}
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'none'; form-action 'none'; "
       "frame-ancestors 'none'; base-uri 'none'")
# The token is in the URL: never send it on as a Referer; never cache a page that may be revoked.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def human_time(mtime_ns: int) -> str:
    return time.strftime("%d %b %Y, %H:%M UTC", time.gmtime(mtime_ns / 1e9)) if mtime_ns else ""


def _page(title: str, body: str, footer: bool = True) -> str:
    e = html.escape
    note = "<footer>Shared through a Box link. Anyone with the link can see this.</footer>" if footer else ""
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"referrer\" content=\"no-referrer\"><meta name=\"robots\" content=\"noindex, nofollow\">"
        f"<title>{e(title)} · Box</title><style>{STYLE}</style></head><body><main>"
        "<header><span class=\"logo\">Box</span><span>shared with you, read only</span></header>"
        f"{body}{note}</main></body></html>"
    )


def _crumbs(base: str, root_name: str, sub: str) -> str:
    e = html.escape
    if not sub:
        return ""
    parts = sub.split("/")
    links = [f"<a href=\"{e(base)}\">{e(root_name)}</a>"]
    for i, part in enumerate(parts[:-1]):
        href = base + "/" + "/".join(quote(p, safe="") for p in parts[: i + 1])
        links.append(f"<a href=\"{e(href)}\">{e(part)}</a>")
    links.append(e(parts[-1]))
    return f"<nav class=\"crumbs\">{' / '.join(links)}</nav>"


def file_page(base: str, root_name: str, sub: str, name: str, size: int, mtime_ns: int) -> str:
    """One file: name, size and time, and a Download button (`?dl=1`)."""
    e = html.escape
    href = (base + "/" + "/".join(quote(p, safe="") for p in sub.split("/")) if sub else base) + "?dl=1"
    when = human_time(mtime_ns)
    body = (
        f"{_crumbs(base, root_name, sub)}<section class=\"card\"><h1>{e(name)}</h1>"
        f"<p class=\"meta\">{e(format_size(size))}{' · ' + e(when) if when else ''}</p>"
        f"<a class=\"button\" id=\"download\" href=\"{e(href)}\" download>Download</a></section>"
    )
    return _page(name, body)


def folder_page(base: str, root_name: str, sub: str, name: str, children: list[dict[str, Any]]) -> str:
    """A folder: its entries, a download per file, a way into subfolders, and "Download all" as a zip."""
    e = html.escape
    here = base + ("/" + "/".join(quote(p, safe="") for p in sub.split("/")) if sub else "")
    files = sum(1 for c in children if c["kind"] == "file")
    folders = sum(1 for c in children if c["kind"] == "dir")
    rows = []
    for c in children:
        href = here + "/" + quote(c["name"], safe="")
        if c["kind"] == "dir":
            rows.append(f"<li class=\"dir\"><span class=\"icon dir\"></span><span class=\"name\">"
                        f"<a href=\"{e(href)}\">{e(c['name'])}/</a></span></li>")
        elif c["kind"] == "file":
            rows.append(f"<li class=\"file\"><span class=\"icon\"></span><span class=\"name\">"
                        f"<a href=\"{e(href)}\">{e(c['name'])}</a></span>"
                        f"<span class=\"size\">{e(format_size(c['size']))}</span>"
                        f"<a class=\"get\" href=\"{e(href)}?dl=1\" download>Download</a></li>")
        else:
            rows.append(f"<li class=\"link\"><span class=\"icon link\"></span><span class=\"name\">{e(c['name'])}"
                        f"</span><span class=\"size\">link to {e(str(c.get('target') or ''))}</span></li>")
    summary = f"{folders} folder{'s' if folders != 1 else ''}, {files} file{'s' if files != 1 else ''}"
    body = (
        f"{_crumbs(base, root_name, sub)}<section class=\"card\"><h1>{e(name)}</h1>"
        f"<p class=\"meta\">{e(summary)}</p>"
        f"<a class=\"button\" id=\"download-all\" href=\"{e(here)}?dl=1\" download>Download all (.zip)</a>"
        f"<ul>{''.join(rows) if rows else '<li>This folder is empty.</li>'}</ul></section>"
    )
    return _page(name, body)


def error_page(status: int, title: str, message: str) -> str:
    e = html.escape
    body = (f"<section class=\"card\"><p class=\"code\">{status}</p><h1>{e(title)}</h1>"
            f"<p class=\"meta\">{e(message)}</p></section>")
    return _page(title, body, footer=False)


def content_disposition(name: str) -> str:
    """An attachment header that survives any file name (ASCII fallback plus RFC 5987 UTF-8 form)."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in "\"\\;%" else "_" for ch in name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


__all__ = ["CSP", "HEADERS", "content_disposition", "error_page", "file_page", "folder_page"]
