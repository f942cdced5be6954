"""Which Debian mirror (and proxy) this machine's apt uses, so a build that fetches packages uses the same.

A site that reaches Debian only through its own mirror or a caching proxy has already told apt so; the
base image's debootstrap reads the same place instead of assuming deb.debian.org:

- the mirror: the first source, in apt's reading order (``sources.list``, then ``sources.list.d/``
  sorted by name), that serves the main Debian archive for the suite: a ``deb`` entry listing exactly
  that suite (``bookworm``, not ``bookworm-security``/``-updates``) with the ``main`` component. Both
  formats are read: deb822 ``*.sources`` (``Types:``/``URIs:``/``Suites:``/``Components:``, paragraphs
  with ``Enabled: no`` skipped) and one-line ``*.list`` (``deb [opts] URI suite comps``); other files
  (``*.disabled``, ``*.save``...) are ignored, as apt ignores them. An entry signed by a keyring other
  than Debian's archive keyring is a third-party repository (debootstrap could not verify it), not the
  Debian archive, and is skipped. ``EDGE_DEBIAN_MIRROR`` overrides; deb.debian.org is the fallback
  only when nothing is found.
- the proxy: apt's ``Acquire::<scheme>::Proxy`` (or its per-host form), read with ``apt-config`` so
  every syntax apt accepts is understood.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

APT_ETC = Path("/etc/apt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "EDGE_DEBIAN_MIRROR"
#: URI schemes debootstrap can fetch from (apt's ``mirror+``, ``tor+``, ``cdrom:`` methods it cannot).
_FETCHABLE = ("http", "https", "ftp", "file")
_ONE_LINE = re.compile(
    r"^(?P<type>deb|deb-src)\s+(?:\[(?P<opts>[^\]]*)\]\s*)?(?P<uri>\S+)\s+(?P<suite>\S+)(?P<comps>.*)$"
)


@dataclass(frozen=True)
class AptSource:
    """One source entry as apt reads it (a deb822 paragraph or a one-line entry)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: Mapping[str, str]
    origin: str  # file (and paragraph or line) it came from

    @property
    def enabled(self) -> bool:
        return self.options.get("enabled", "yes").strip().lower() not in ("no", "false", "0")

    def serves_debian_archive(self, suite: str) -> bool:
        """A binary source of ``suite`` itself (not -security/-updates) with ``main``, signed as Debian is."""
        signed_by = self.options.get("signed-by", "").strip()
        return (
            self.enabled
            and "deb" in self.types
            and suite in self.suites
            and "main" in self.components
            and (not signed_by or "debian-archive" in signed_by)
        )


@dataclass(frozen=True)
class Mirror:
    uri: str
    source: str  # where the URI came from, for the build message


def _source_files(apt_etc: Path) -> Iterator[Path]:
    """Source files in apt's reading order: sources.list, then sources.list.d/*.list|*.sources by name."""
    main = apt_etc / "sources.list"
    if main.is_file():
        yield main
    parts = apt_etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix in (".list", ".sources") and path.is_file():
                yield path


def _deb822(path: Path) -> Iterator[AptSource]:
    paragraphs: list[dict[str, str]] = [{}]
    key = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if paragraphs[-1]:
                paragraphs.append({})
            key = None
            continue
        if line[0] in " \t" and key is not None:  # continuation of a multi-line field (an inline key)
            paragraphs[-1][key] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        paragraphs[-1][key] = value.strip()
    for number, fields in enumerate((p for p in paragraphs if p), start=1):
        yield AptSource(
            types=tuple(fields.get("types", "").split()),
            uris=tuple(fields.get("uris", "").split()),
            suites=tuple(fields.get("suites", "").split()),
            components=tuple(fields.get("components", "").split()),
            options={k: v for k, v in fields.items() if k not in ("types", "uris", "suites", "components")},
            origin=f"{path} (entry {number})",
        )


def _one_line(path: Path) -> Iterator[AptSource]:
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        match = _ONE_LINE.match(line)
        if not match:
            continue
        options = {}
        for opt in (match["opts"] or "").split():
            name, _, value = opt.partition("=")
            options[name.strip().lower()] = value.strip()
        yield AptSource(
            types=(match["type"],),
            uris=(match["uri"],),
            suites=(match["suite"],),
            components=tuple(match["comps"].split()),
            options=options,
            origin=f"{path}:{number}",
        )


def apt_sources(apt_etc: Path = APT_ETC) -> Iterator[AptSource]:
    """Every source entry under ``apt_etc``, in apt's order."""
    for path in _source_files(apt_etc):
        yield from (_deb822(path) if path.suffix == ".sources" else _one_line(path))


def debian_mirror(suite: str, *, apt_etc: Path = APT_ETC, environ: Mapping[str, str] = os.environ) -> Mirror:
    """The Debian mirror to fetch ``suite`` from: the override, else apt's own source, else deb.debian.org."""
    override = environ.get(MIRROR_ENV, "").strip()
    if override:
        return Mirror(override.rstrip("/"), f"${MIRROR_ENV}")
    for source in apt_sources(apt_etc):
        if not source.serves_debian_archive(suite):
            continue
        for uri in source.uris:
            if urlsplit(uri).scheme in _FETCHABLE:
                return Mirror(uri.rstrip("/"), source.origin)
    return Mirror(DEFAULT_MIRROR, f"default: no {suite} main source in {apt_etc}; set ${MIRROR_ENV} to choose one")


def apt_proxy(uri: str, *, environ: Mapping[str, str] = os.environ) -> str | None:
    """apt's proxy for ``uri`` (``Acquire::<scheme>::Proxy::<host>``, else ``Acquire::<scheme>::Proxy``), or None.

    Read with ``apt-config`` (``APT_CONFIG`` in ``environ`` is honoured, as apt honours it), so the
    answer is apt's own reading of /etc/apt/apt.conf and apt.conf.d. ``DIRECT`` or ``false`` mean none.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or shutil.which("apt-config") is None:
        return None
    option = f"Acquire::{parts.scheme}::Proxy"
    try:
        proc = subprocess.run(
            ["apt-config", "shell", "HOST", f"{option}::{parts.hostname}", "ANY", option],
            capture_output=True, text=True, env=dict(environ), timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            found[name] = " ".join(shlex.split(value))
    value = found.get("HOST") or found.get("ANY") or ""
    return None if value.strip().lower() in ("", "direct", "false") else value.strip()


def redacted(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
