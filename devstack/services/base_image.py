"""The training base image `edge-training-base:bookworm`, built offline from Debian packages.

No registry can be pulled from on this machine kind, so the image is a debootstrap'ed minimal Debian
with python3 and the training libraries, turned into an image with `docker import`. The rootfs
tarball is cached under /var/cache/edge-training/ (outside the repo) keyed by a content version
computed from the package list and build steps: a second stack-up, or a new clone on this machine,
reuses the image or the tarball, and a change to the package list rebuilds.

The Debian mirror is the one this machine's apt uses (a site mirror or proxy works unchanged), read from
/etc/apt by devstack.apt_sources; EDGE_DEBIAN_MIRROR overrides it, and deb.debian.org is used only when
apt lists no source for the suite. apt's proxy for that mirror, if one is configured, is passed to
debootstrap as http_proxy/https_proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.apt_sources import Mirror, apt_proxy, debian_mirror, redacted
from devstack.base import Service, StackContext, StackError
from devstack.services.docker_engine import docker_client
from devstack.services.hosts import HOSTNAMES
from devstack.util import apt_install, run

IMAGE_REPO = "edge-training-base"
IMAGE_TAG = "bookworm"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-sklearn", "python3-pandas", "python3-joblib", "python3-matplotlib",
            "ca-certificates", "curl")
# Build-only packages bookworm drags in: python3-scipy Depends on python3-pythran (a compiler for
# scipy's own build), which pulls g++, boost and the -dev packages: about 450 MB the training never
# uses. They are purged with --force-depends after debootstrap (the smoke test below proves the
# libraries still import). The image's dpkg database then has these unmet dependencies, so an
# `apt-get install` in a derived image needs `apt-get -f install` first.
BUILD_ONLY = (
    "python3-pythran", "libboost-dev", "libboost1.74-dev", "libopenblas-dev", "libopenblas-pthread-dev",
    "libxsimd-dev", "python3-all-dev", "libpython3-all-dev", "python3-dev", "libpython3-dev",
    "python3.11-dev", "libpython3.11-dev", "libexpat1-dev", "zlib1g-dev", "g++", "g++-12", "gcc",
    "gcc-12", "cpp", "cpp-12", "libstdc++-12-dev", "libgcc-12-dev", "libc6-dev", "libc-dev-bin",
    "linux-libc-dev", "libcrypt-dev", "libnsl-dev", "libtirpc-dev", "binutils", "binutils-common",
    "binutils-x86-64-linux-gnu", "libbinutils", "libctf0", "libctf-nobfd0", "libgprofng0", "libasan8",
    "libtsan2", "liblsan0", "libubsan1", "libitm1", "libcc1-0", "libisl23", "libmpc3",
)
IMPORT_CHECK = "import sklearn, sklearn.ensemble, scipy, pandas, joblib, matplotlib, matplotlib.pyplot"
# Paths removed from the rootfs after debootstrap (apt caches, docs, man pages, translations).
TRIM = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
        "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
        "var/cache/debconf/*-old", "var/log/*.log", "var/log/apt/*")
IMAGE_CHANGES = (
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "ENV MPLBACKEND=Agg",
    'CMD ["python3"]',
)
BUILD_RECIPE_REVISION = "1"
VERSION_LABEL = "org.edge-training.base.version"
CACHE_DIR = Path("/var/cache/edge-training")
SMOKE = "import sklearn, pandas, matplotlib, joblib, socket; " \
        "print(sklearn.__version__, pandas.__version__, matplotlib.__version__); " \
        f"print(socket.gethostbyname({HOSTNAMES[3]!r}))"


def content_version(*, suite: str = SUITE, mirror: str | None = None, packages: tuple[str, ...] = PACKAGES,
                    purge: tuple[str, ...] = BUILD_ONLY, trim: tuple[str, ...] = TRIM,
                    changes: tuple[str, ...] = IMAGE_CHANGES, revision: str = BUILD_RECIPE_REVISION) -> str:
    """A short hash of everything that decides the image's content (``mirror``: this machine's, by default)."""
    if mirror is None:
        mirror = debian_mirror(suite).uri
    recipe = json.dumps({"suite": suite, "mirror": mirror, "packages": sorted(packages),
                         "purge": sorted(purge), "trim": list(trim), "changes": list(changes),
                         "revision": revision}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _unmount_under(root: Path) -> None:
    prefix = str(root.resolve()) + "/"
    with open("/proc/mounts") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    with open("/proc/mounts") as fh:
        left = [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]
    if left:
        raise StackError(f"base-image: could not unmount {left} inside {root}; remove it by hand")


class BaseImageService(Service):
    name = "base-image"
    address = IMAGE

    def __init__(self, *, cache_dir: Path = CACHE_DIR, mirror: Mirror | None = None) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror or debian_mirror(SUITE)
        self.version = content_version(mirror=self.mirror.uri)

    @property
    def tarball(self) -> Path:
        return self.cache_dir / f"{IMAGE_REPO}-{SUITE}-{self.version}.tar"

    def _image_version(self) -> str | None:
        import docker.errors

        client = docker_client()
        try:
            image = client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            return None
        finally:
            client.close()
        return (image.labels or {}).get(VERSION_LABEL)

    def install(self, ctx: StackContext) -> None:
        if self._image_version() == self.version:
            return
        if not self.tarball.exists():
            self._build_rootfs(ctx)
        self._import(ctx)

    def _build_rootfs(self, ctx: StackContext) -> None:
        apt_install(["debootstrap"], what=self.name)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        proxy_env = self._proxy_env()
        via = "".join(f", via {k}={redacted(v)} (apt's Acquire proxy)" for k, v in proxy_env.items())
        print(f"{self.name}: debootstrap {SUITE} (minbase + {len(PACKAGES)} packages) from {redacted(self.mirror.uri)} "
              f"(mirror from {self.mirror.source}){via}; takes a few minutes the first time", flush=True)
        tmp = tempfile.mkdtemp(dir=self.cache_dir, prefix="rootfs-")
        try:
            self._debootstrap_to_tarball(ctx, Path(tmp) / "rootfs", proxy_env)
        finally:
            _unmount_under(Path(tmp))
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.cache_dir.glob(f"{IMAGE_REPO}-{SUITE}-*.tar"):
            if old != self.tarball:
                old.unlink(missing_ok=True)
        print(f"{self.name}: rootfs cached at {self.tarball} "
              f"({self.tarball.stat().st_size / 2**20:.0f} MiB, {time.monotonic() - t0:.0f}s)", flush=True)

    def _proxy_env(self) -> dict[str, str]:
        """apt's proxy for the mirror as the variable debootstrap's downloads (wget) read; empty if none."""
        proxy = apt_proxy(self.mirror.uri)
        if proxy is None:
            return {}
        scheme = self.mirror.uri.split(":", 1)[0].lower()
        return {f"{scheme}_proxy": proxy}

    def _debootstrap_to_tarball(self, ctx: StackContext, rootfs: Path, proxy_env: dict[str, str]) -> None:
        ctx.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(ctx.log_file(self.name), "ab") as log:
                proc = subprocess.run(
                    ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                     str(rootfs), self.mirror.uri],
                    stdout=log, stderr=subprocess.STDOUT, timeout=1800, env={**os.environ, **proxy_env},
                )
        finally:
            # A failed debootstrap can leave /proc or /dev mounted in the target: unmount before
            # the temporary tree is deleted, so the deletion cannot reach the host's files.
            _unmount_under(rootfs)
        if proc.returncode != 0:
            tail = ctx.log_file(self.name).read_text(errors="replace")[-1500:]
            raise StackError(f"{self.name}: `debootstrap --variant=minbase ... {SUITE}` exited "
                             f"{proc.returncode}; log {ctx.log_file(self.name)}:\n{tail}")
        installed = set(run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package}\n"],
                            what=self.name).stdout.decode().split())
        purge = [p for p in BUILD_ONLY if p in installed]
        if purge:
            run(["chroot", str(rootfs), "dpkg", "--purge", "--force-depends", *purge],
                what=self.name, env={"DEBIAN_FRONTEND": "noninteractive"})
        run(["chroot", str(rootfs), "python3", "-c", IMPORT_CHECK], what=f"{self.name} (import check)",
            env={"HOME": "/root", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp"})
        for pattern in TRIM:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        partial = self.tarball.with_suffix(".tar.partial")
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
            what=self.name, timeout=900)
        partial.rename(self.tarball)

    def _import(self, ctx: StackContext) -> None:
        argv = ["docker", "-H", "unix:///var/run/docker.sock", "import"]
        for change in (*IMAGE_CHANGES, f"LABEL {VERSION_LABEL}={self.version}"):
            argv += ["--change", change]
        argv += ["--message", f"debootstrap {SUITE} minbase + {' '.join(PACKAGES)}",
                 str(self.tarball), f"{IMAGE_REPO}:{self.version}"]
        run(argv, what=self.name, timeout=900)
        run(["docker", "-H", "unix:///var/run/docker.sock", "tag", f"{IMAGE_REPO}:{self.version}", IMAGE],
            what=self.name)
        (ctx.state / "base-image.verified").unlink(missing_ok=True)
        # Older content versions: untag (their layers go once no image built on them is left).
        listed = run(["docker", "-H", "unix:///var/run/docker.sock", "images", "--format",
                      "{{.Repository}}:{{.Tag}}", IMAGE_REPO], what=self.name).stdout.decode().split()
        for ref in listed:
            tag = ref.rsplit(":", 1)[-1]
            if len(tag) == 12 and tag != self.version and all(c in "0123456789abcdef" for c in tag):
                run(["docker", "-H", "unix:///var/run/docker.sock", "rmi", ref], what=self.name,
                    check=False)

    def start(self, ctx: StackContext) -> str:
        return f"{self.name}: {IMAGE} (content version {self.version}) present"

    def verify(self, ctx: StackContext) -> str:
        """Run the image once with host networking: the libraries import and the stack's names resolve."""
        client = docker_client(timeout=120)
        try:
            image_id = client.images.get(IMAGE).id
            marker = ctx.state / "base-image.verified"
            if marker.exists() and marker.read_text().strip() == image_id:
                return "smoke test passed earlier for this image id"
            out = client.containers.run(IMAGE, ["python3", "-c", SMOKE], network_mode="host",
                                        remove=True, stdout=True, stderr=True)
        except Exception as exc:  # noqa: BLE001 - the message names the image and the cause
            raise StackError(f"{self.name}: smoke test in {IMAGE} failed: {exc}") from exc
        finally:
            client.close()
        lines = out.decode().split()
        if lines[-1:] != ["127.0.0.1"]:
            raise StackError(f"{self.name}: in a host-network container {HOSTNAMES[3]} resolved to "
                             f"{lines[-1:]}, expected 127.0.0.1")
        marker.write_text(image_id + "\n")
        return f"sklearn/pandas/matplotlib import; stack names resolve ({' '.join(lines[:3])})"

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        try:
            found = self._image_version()
        except Exception as exc:  # noqa: BLE001
            return False, f"cannot inspect {IMAGE}: {type(exc).__name__}: {str(exc)[:150]}"
        if found is None:
            return False, f"image {IMAGE} not found"
        if found != self.version:
            return False, f"image {IMAGE} has content version {found}, expected {self.version}"
        return True, f"content version {self.version}"

    def after_up(self, ctx: StackContext) -> None:
        print(f"{self.name}: {self.verify(ctx)}", flush=True)

    def env(self, ctx: StackContext) -> dict[str, str]:
        return {"EDGE_BASE_IMAGE": IMAGE}

    def stop(self, ctx: StackContext) -> str:
        return f"{self.name}: image kept (cached in dockerd and {self.cache_dir})"
