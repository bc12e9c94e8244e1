"""Container images for the rig's real node, made here: no registry, no Docker.

Two images, each packed as a docker-archive tarball (what `docker save` writes:
one layer tar, an image config JSON and `manifest.json`) that containerd imports
with `ctr images import`:

- the pause image (the Pod sandbox's process): a small static C program, compiled
  here with `gcc -static`, that sleeps until SIGTERM or SIGINT and reaps children;
- a busybox image: Debian's static `busybox` binary (package `busybox-static`)
  with a link for each of its applets, for test Pods (`sh`, `httpd`, `wget`, ...).

The tarballs are cached outside the repository, named by a hash of what goes
into them, and their tags carry that hash: an unchanged image is never packed
again, and a changed one never hides behind an old tag.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from driftline.local.servers.process import InfraError

REPOSITORY = "driftline.local/rig"
BUSYBOX = Path("/bin/busybox")

PAUSE_C = r"""
/* The Pod sandbox's process: holds the Pod's namespaces, sleeps until told to
 * stop, and reaps the zombies a shared PID namespace leaves to it. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_stop = {0}, on_child = {0};
    on_stop.sa_handler = stop;
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    on_child.sa_handler = reap;
    on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &on_child, NULL);
    for (;;) {
        pause();
    }
}
"""


@dataclass(frozen=True)
class ImageArchive:
    """A packed image: import `path`, refer to it by `ref`."""

    ref: str
    path: Path


def cache_dir() -> Path:
    root = os.environ.get("DRIFTLINE_RIG_CACHE") or Path.home() / ".cache/driftline-rig"
    return Path(root) / "images"


def _file_entry(name: str, data: bytes, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _dir_entry(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info


def _link_entry(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    return info


def layer_tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """One image layer: a plain tar, owned by root, every time stamp 0 (reproducible)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def write_docker_archive(path: Path, ref: str, layer: bytes, config: dict[str, object]) -> None:
    """A docker-archive tarball (as `docker save` writes it) with one layer.

    `manifest.json` names the image config and the layer; the config lists the
    layer's digest as its only `diff_id`; `RepoTags` gives the image its name.
    """
    layer_digest = hashlib.sha256(layer).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "driftline rig"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_digest}/layer.tar"]}]
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [
        _dir_entry(f"{layer_digest}/"),
        _file_entry(f"{layer_digest}/layer.tar", layer, 0o644),
        _file_entry(config_name, config_bytes, 0o644),
        _file_entry("manifest.json", json.dumps(manifest).encode(), 0o644),
    ]
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(layer_tar(entries))
    partial.replace(path)


def _cached(
    name: str, inputs: bytes, build: Callable[[], tuple[bytes, dict[str, object]]]
) -> ImageArchive:
    """The archive for `inputs` packed by this module as it is now: its tag and file
    name carry a hash of both, so a change of either packs a new one."""
    tag = hashlib.sha256(Path(__file__).read_bytes() + inputs).hexdigest()[:12]
    ref = f"{REPOSITORY}/{name}:{tag}"
    path = cache_dir() / f"{name}-{tag}.tar"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        layer, config = build()
        write_docker_archive(path, ref, layer, config)
    return ImageArchive(ref, path)


def pause_image() -> ImageArchive:
    """The sandbox image: the pause program above, compiled statically."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise InfraError("gcc is needed for the rig's pause image (apt-get install gcc libc6-dev)")
    version = subprocess.run(
        [gcc, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]

    def build() -> tuple[bytes, dict[str, object]]:
        with tempfile.TemporaryDirectory(prefix="driftline-pause-") as tmp:
            source, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
            source.write_text(PAUSE_C)
            result = subprocess.run(
                [gcc, "-static", "-Os", "-s", "-Wall", "-Werror", "-o", str(binary), str(source)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                raise InfraError(f"cannot build the pause program:\n{result.stderr}")
            layer = layer_tar([_file_entry("pause", binary.read_bytes())])
        return layer, {"Entrypoint": ["/pause"], "User": "65535:65535"}

    return _cached("pause", version.encode(), build)


def busybox_image() -> ImageArchive:
    """A test image: Debian's static busybox with a link per applet, /bin/sh first."""
    if not BUSYBOX.is_file():
        raise InfraError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    binary = BUSYBOX.read_bytes()

    def build() -> tuple[bytes, dict[str, object]]:
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [
            _dir_entry("bin/"),
            _file_entry("bin/busybox", binary),
        ]
        applets = sorted(set(applets) - {"busybox"})
        entries += [_link_entry(f"bin/{app}", "busybox") for app in applets]
        entries += [
            _dir_entry("etc/"),
            _file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
            _file_entry("etc/group", b"root:x:0:\n", 0o644),
            _dir_entry("root/", 0o700),
            _dir_entry("tmp/", 0o1777),
            _dir_entry("var/"),
            _dir_entry("var/www/"),
        ]
        config: dict[str, object] = {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"}
        return layer_tar(entries), config

    return _cached("busybox", binary, build)
