"""The base image's Debian mirror and proxy come from the machine's apt configuration.

Temp dirs stand in for /etc/apt (sources) and, through APT_CONFIG, for /etc/apt/apt.conf.d (the proxy).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack import apt_sources
from devstack.apt_sources import DEFAULT_MIRROR, MIRROR_ENV, apt_proxy, apt_sources as read_sources, debian_mirror
from devstack.services import base_image

SUITE = "bookworm"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def apt_etc(tmp_path: Path, *, sources_list: str | None = None, **parts: str) -> Path:
    """A stand-in for /etc/apt: ``sources.list`` and files in ``sources.list.d`` (keyword: file name, dots as __)."""
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources_list is not None:
        (etc / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (etc / "sources.list.d" / name.replace("__", ".")).write_text(text)
    return etc


# This machine's file, as the Debian image ships it (a comment inside the paragraph, security in its own).
DEBIAN_SOURCES = f"""\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.site.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: {DEBIAN_KEYRING}

Types: deb
URIs: http://mirror.site.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: {DEBIAN_KEYRING}
"""


def test_deb822_sources_give_the_main_archive_entry(tmp_path):
    etc = apt_etc(tmp_path, debian__sources=DEBIAN_SOURCES)
    mirror = debian_mirror(SUITE, apt_etc=etc, environ={})
    assert mirror.uri == "http://mirror.site.example/debian"
    assert mirror.source == f"{etc}/sources.list.d/debian.sources (entry 1)"


def test_one_line_list_with_options_is_read(tmp_path):
    etc = apt_etc(tmp_path, sources_list=(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src-only.example/debian bookworm main\n"
        f"deb [arch=amd64 signed-by={DEBIAN_KEYRING}] http://proxy.site.example:3142/debian bookworm main contrib\n"
    ))
    mirror = debian_mirror(SUITE, apt_etc=etc, environ={})
    assert mirror.uri == "http://proxy.site.example:3142/debian"
    assert mirror.source == f"{etc}/sources.list:3"


def test_security_updates_other_suites_and_third_party_repositories_are_skipped(tmp_path):
    etc = apt_etc(
        tmp_path,
        sources_list=(
            "deb http://security.example/debian-security bookworm-security main\n"
            "deb http://updates.example/debian bookworm-updates main\n"
            "deb http://backports.example/debian bookworm-backports main\n"
            "deb http://trixie.example/debian trixie main\n"
            "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable\n"
            "deb [signed-by=/usr/share/keyrings/sury.gpg] https://packages.sury.org/php bookworm main\n"
        ),
        a_disabled__sources="Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
                            "Components: main\nEnabled: no\n",
        b_mirror_method__list="deb mirror+file:/etc/apt/mirrors.txt bookworm main\n",
        c_old__list__save="deb http://saved-copy.example/debian bookworm main\n",
        d_farm__sources__disabled_by_farm="Types: deb\nURIs: http://farm.example/debian\nSuites: bookworm\n"
                                          "Components: main\n",
        z_debian__sources=DEBIAN_SOURCES,
    )
    assert debian_mirror(SUITE, apt_etc=etc, environ={}).uri == "http://mirror.site.example/debian"
    # Every parsed entry was seen, in apt's order (sources.list, then sources.list.d by name).
    origins = [s.origin for s in read_sources(etc)]
    assert origins[0] == f"{etc}/sources.list:1"
    assert [o.split("/")[-1] for o in origins[6:]] == [
        "a_disabled.sources (entry 1)", "b_mirror_method.list:1", "z_debian.sources (entry 1)",
        "z_debian.sources (entry 2)",
    ]


def test_override_env_var_wins(tmp_path):
    etc = apt_etc(tmp_path, debian__sources=DEBIAN_SOURCES)
    mirror = debian_mirror(SUITE, apt_etc=etc, environ={MIRROR_ENV: "https://override.example/debian/"})
    assert mirror.uri == "https://override.example/debian"
    assert MIRROR_ENV in mirror.source


def test_falls_back_to_deb_debian_org_only_when_nothing_is_found(tmp_path):
    empty = apt_etc(tmp_path)
    mirror = debian_mirror(SUITE, apt_etc=empty, environ={MIRROR_ENV: "  "})
    assert mirror.uri == DEFAULT_MIRROR
    assert "default" in mirror.source and MIRROR_ENV in mirror.source
    assert debian_mirror(SUITE, apt_etc=tmp_path / "no-such-dir", environ={}).uri == DEFAULT_MIRROR


def test_content_version_uses_the_resolved_mirror_and_ignores_a_trailing_slash(tmp_path, monkeypatch):
    etc = apt_etc(tmp_path, debian__sources=DEBIAN_SOURCES.replace("http://mirror.site.example/debian/",
                                                                   DEFAULT_MIRROR + "/"))
    # The same URI as the built-in default gives the same content version: no rebuild on such machines.
    assert debian_mirror(SUITE, apt_etc=etc, environ={}).uri == DEFAULT_MIRROR
    monkeypatch.setenv(MIRROR_ENV, DEFAULT_MIRROR + "/")
    assert base_image.content_version() == base_image.content_version(mirror=DEFAULT_MIRROR)
    assert base_image.BaseImageService().mirror.uri == DEFAULT_MIRROR
    monkeypatch.setenv(MIRROR_ENV, "http://mirror.site.example/debian")
    assert base_image.content_version() != base_image.content_version(mirror=DEFAULT_MIRROR)


# --- apt's proxy ---------------------------------------------------------------------------------
needs_apt_config = pytest.mark.skipif(shutil.which("apt-config") is None, reason="apt-config not installed")


def apt_config_env(tmp_path: Path, conf: str) -> dict[str, str]:
    """APT_CONFIG pointing apt-config at a temp apt.conf.d (instead of /etc/apt's) holding ``conf``."""
    etc = tmp_path / "apt-etc"
    (etc / "apt.conf.d").mkdir(parents=True)
    (etc / "apt.conf.d" / "01proxy").write_text(conf)
    main = tmp_path / "apt.conf"
    main.write_text(f'Dir::Etc "{etc}/";\nDir::Etc::main "apt.conf";\nDir::Etc::parts "apt.conf.d";\n')
    return {"APT_CONFIG": str(main), "PATH": "/usr/bin:/bin"}


@needs_apt_config
def test_apt_proxy_is_read_with_apt_config(tmp_path):
    env = apt_config_env(tmp_path, 'Acquire::http::Proxy "http://user:pw@proxy.site.example:3128/";\n'
                                   'Acquire { https { Proxy "http://sproxy.site.example:8080"; }; };\n')
    assert apt_proxy("http://deb.debian.org/debian", environ=env) == "http://user:pw@proxy.site.example:3128/"
    assert apt_proxy("https://deb.debian.org/debian", environ=env) == "http://sproxy.site.example:8080"
    assert apt_proxy("file:/srv/mirror/debian", environ=env) is None
    assert apt_sources.redacted("http://user:pw@proxy.site.example:3128/") == "http://proxy.site.example:3128/"


@needs_apt_config
def test_apt_proxy_per_host_direct_and_none(tmp_path):
    env = apt_config_env(tmp_path, 'Acquire::http::Proxy "http://proxy.site.example:3128";\n'
                                   'Acquire::http::Proxy::mirror.site.example "DIRECT";\n')
    assert apt_proxy("http://mirror.site.example/debian", environ=env) is None
    assert apt_proxy("http://deb.debian.org/debian", environ=env) == "http://proxy.site.example:3128"
    assert apt_proxy("http://deb.debian.org/debian", environ=apt_config_env(tmp_path / "none", "")) is None


@needs_apt_config
def test_debootstrap_gets_apts_proxy_as_http_proxy(tmp_path, monkeypatch):
    env = apt_config_env(tmp_path, 'Acquire::http::Proxy "http://proxy.site.example:3128";\n')
    monkeypatch.setenv("APT_CONFIG", env["APT_CONFIG"])
    service = base_image.BaseImageService(cache_dir=tmp_path / "cache",
                                          mirror=apt_sources.Mirror("http://deb.debian.org/debian", "test"))
    assert service._proxy_env() == {"http_proxy": "http://proxy.site.example:3128"}
