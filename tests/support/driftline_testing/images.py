"""Driftline's images, built here from docker/*.Dockerfile by a Docker engine of the tests' own.

`DockerDaemon` starts Debian's `dockerd` (package `docker.io`) in the host network
namespace with a data root, exec root and socket under a cache folder outside the
repository (`${DRIFTLINE_IMAGES_CACHE:-~/.cache/driftline-images}`), with no bridge,
no iptables, no forwarding and no masquerading: containers use the host network
(`--network host`) and serve nothing but loopback. It stops dockerd, and so the
containerd dockerd started, when the context ends, also after a failed test.

`ImageBuilder` makes the Python base once: `debootstrap --variant=minbase` of Debian
bookworm with `BASE_PACKAGES`, cached by that list, then `docker import`. The build
stages run on a "build base": that image plus this machine's CA bundle, with
`SSL_CERT_FILE`, `PIP_CERT` and `UV_NATIVE_TLS=1` pointing at it (the registries are
reached through an intercepting CA here); the final stages never see it. Images are
built from the Dockerfiles unchanged (bases through `PYTHON_IMAGE` / `CUDA_IMAGE` and
`BUILD_IMAGE`) and tagged with a content key: the Dockerfile, its build arguments, the
bases and every file it copies. An unchanged tree finds its images and builds nothing.

The Makefile's `images` target is what users run, with their own Docker; this module
is for the tests. `python -m driftline_testing.images [NAME...]` builds and reports
sizes by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from driftline.local.servers import InfraError, ManagedProcess

ROOT = Path(__file__).resolve().parents[3]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Debian's Python 3.11 and what the Dockerfiles use (venv with ensurepip, useradd).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
BUILD_CA_PATH = "/etc/ssl/certs/driftline-build-ca.pem"
# Debian's docker.io client, never another `docker` on PATH: it matches the engine.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
NETWORK_FLAGS = (
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
)


@dataclass(frozen=True)
class ImageSpec:
    """One image: its repository, its Dockerfile and the build arguments it takes."""

    repository: str
    dockerfile: str
    base_arg: str  # PYTHON_IMAGE, CUDA_IMAGE or DEBIAN_IMAGE (all get the Debian base)
    build_args: tuple[tuple[str, str], ...] = ()


# The same images as the Makefile's `images` target (a test keeps the two in step).
IMAGES: dict[str, ImageSpec] = {
    "operator": ImageSpec("driftline/operator", "docker/operator.Dockerfile", "PYTHON_IMAGE"),
    "inference": ImageSpec(
        "driftline/inference",
        "docker/services.Dockerfile",
        "PYTHON_IMAGE",
        (
            ("EXTRAS", "inference,joiner,drift,cpu"),
            ("IMAGE_TITLE", "driftline-inference"),
            ("HEALTH_PORT", "8080"),
        ),
    ),
    "services": ImageSpec("driftline/services", "docker/services.Dockerfile", "PYTHON_IMAGE"),
    # CUDA bases cannot be pulled here: the GPU Dockerfile is built on the Debian base.
    "inference-gpu": ImageSpec(
        "driftline/inference-gpu", "docker/inference-gpu.Dockerfile", "CUDA_IMAGE"
    ),
    # The chart's dev mode (`dev.enabled`): Redis, Apache Kafka and MLflow.
    "dev-redis": ImageSpec("driftline/dev-redis", "docker/dev/redis.Dockerfile", "DEBIAN_IMAGE"),
    "dev-kafka": ImageSpec("driftline/dev-kafka", "docker/dev/kafka.Dockerfile", "DEBIAN_IMAGE"),
    "dev-mlflow": ImageSpec("driftline/dev-mlflow", "docker/dev/mlflow.Dockerfile", "PYTHON_IMAGE"),
}
# The images of the chart's dev mode, by their key under `dev` in values.yaml.
DEV_IMAGES = {"redis": "dev-redis", "kafka": "dev-kafka", "mlflow": "dev-mlflow"}


def cache_dir() -> Path:
    explicit = os.environ.get("DRIFTLINE_IMAGES_CACHE")
    return Path(explicit) if explicit else Path.home() / ".cache" / "driftline-images"


def missing_tools() -> list[str]:
    """What this machine lacks to build the images, as Debian package names."""
    missing = []
    if not (Path(DOCKERD).is_file() and Path(DOCKER).is_file()):
        missing.append("docker.io")
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").is_file():
        missing.append("debootstrap")
    return missing


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock on `path` (one user of a cache folder at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InfraError(f"{path} stayed locked for {timeout:.0f}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DockerDaemon:
    """dockerd of the tests' own: host network, no bridge, no iptables, own data root."""

    def __init__(self, cache: Path | None = None, log_path: Path | None = None) -> None:
        self.cache = cache or cache_dir()
        self.data_root = self.cache / "docker"
        # Short: containerd's sockets live under it (a Unix socket path has 108 bytes).
        self.exec_root = self.cache / "run"
        self.socket = self.cache / "docker.sock"
        self.log_path = log_path or self.cache / "dockerd.log"
        self._process: ManagedProcess | None = None
        self._lock: contextlib.ExitStack | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        config = self.cache / "daemon.json"
        return [
            DOCKERD,
            f"--config-file={config}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.cache / 'dockerd.pid'}",
            f"--host={self.host}",
            *NETWORK_FLAGS,
            "--userland-proxy=false",
            "--log-level=warn",
        ]

    def start(self, timeout: float = 60.0) -> Self:
        missing = missing_tools()
        if missing:
            raise InfraError(f"building images needs apt-get install {' '.join(missing)}")
        lock = contextlib.ExitStack()
        lock.enter_context(_locked(self.cache / "dockerd.lock", timeout=600))
        self._lock = lock
        try:
            self._stop_leftovers()
            self._unmount_leftovers()
            (self.cache / "daemon.json").write_text("{}\n")
            self.socket.unlink(missing_ok=True)
            self._process = ManagedProcess("dockerd", self.argv(), log_path=self.log_path)
            self._process.start()
            self._process.wait_ready(self._answers, timeout=timeout, what=self.host, interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        result = self.docker("version", "--format", "{{.Server.Version}}", check=False)
        return result.returncode == 0

    def _stop_leftovers(self) -> None:
        """A dockerd or containerd of a killed run still holding this cache: end it
        (by the pid it wrote), so it does not hold the data root."""
        for pidfile in (self.cache / "dockerd.pid", self.exec_root / "containerd/containerd.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                exe = os.readlink(f"/proc/{pid}/exe")
                if Path(exe).name in ("dockerd", "containerd"):
                    os.kill(pid, 15)
                    for _ in range(100):
                        if not Path(f"/proc/{pid}").exists():
                            break
                        time.sleep(0.1)
                    else:
                        os.kill(pid, 9)

    def _unmount_leftovers(self) -> None:
        """What a dockerd of this cache left mounted (the host's network namespace at
        netns/default, its data root when it was killed), deepest first."""
        ours = [self.exec_root, self.data_root]
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if any(Path(line.split()[1]).is_relative_to(root) for root in ours)
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", mount], capture_output=True, check=False)

    def stop(self) -> None:
        """dockerd stops its containers and its containerd on SIGTERM."""
        if self._process is not None:
            self._process.stop(timeout=30)
            self._process = None
        self._stop_leftovers()
        self._unmount_leftovers()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the client -----------------------------------------------------------------

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 120,
        stdin: IO[bytes] | int | None = None,
        stdout: IO[bytes] | int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}
        env.pop("DOCKER_HOST", None)
        result = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise InfraError(
                f"docker {' '.join(args[:4])} ... exited {result.returncode}:\n"
                f"{(result.stdout or '')[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def image_id(self, ref: str) -> str | None:
        result = self.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def image_size(self, ref: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", ref).stdout)

    def run(
        self, image: str, *argv: str, entrypoint: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`docker run --rm --network host IMAGE ARGV`, never checked: callers read rc."""
        options = ["--rm", "--network", "host"]
        if entrypoint is not None:
            options += ["--entrypoint", entrypoint]
        return self.docker("run", *options, image, *argv, check=False, timeout=timeout)

    @contextlib.contextmanager
    def saving(self, ref: str) -> Iterator[IO[bytes]]:
        """`docker save REF` as a stream (its standard output), for a reader such as
        `ctr images import -`: no tarball on disk. A failed save raises once the
        reader is done."""
        env = {**os.environ, "DOCKER_CLI_HINTS": "false"}
        env.pop("DOCKER_HOST", None)
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [DOCKER, "-H", self.host, "save", ref],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
            assert process.stdout is not None
            try:
                yield process.stdout
            finally:
                process.stdout.close()
                try:
                    code = process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
            if code != 0:
                errors.seek(0)
                raise InfraError(f"docker save {ref} exited {code}: {errors.read().decode()}")

    def save(self, ref: str, path: Path) -> Path:
        """`docker save` to a tarball (what `ctr images import` reads)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.docker("save", "--output", str(path), ref, timeout=900)
        return path


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    size_bytes: int
    seconds: float
    reused: bool

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


def _digest_tree(digest: hashlib._Hash, root: Path, path: Path) -> None:
    """Every file under `path` (a file or folder), by path and content; caches skipped."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        parts = file.relative_to(root).parts
        if (
            "__pycache__" in parts
            or file.suffix == ".pyc"
            or any(p.startswith((".mypy_cache", ".ruff_cache", ".pytest_cache")) for p in parts)
        ):
            continue
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")


def copied_sources(dockerfile: str) -> list[str]:
    """The context paths a Dockerfile's COPY instructions read (not `COPY --from`)."""
    sources: list[str] = []
    for line in dockerfile.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += args[:-1]
    return sources


class ImageBuilder:
    """Builds Driftline's images on a `DockerDaemon`, each once per content key."""

    def __init__(
        self, daemon: DockerDaemon, repo: Path = ROOT, log_dir: Path | None = None
    ) -> None:
        self.daemon = daemon
        self.repo = repo
        self.cache = daemon.cache
        self.log_dir = log_dir or self.cache / "logs"

    # -- the bases ------------------------------------------------------------------

    @staticmethod
    def base_key() -> str:
        text = json.dumps([SUITE, MIRROR, "minbase", sorted(BASE_PACKAGES)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def rootfs(self) -> Path:
        """Debian bookworm with Python, made by debootstrap once per package list."""
        folder = self.cache / "base" / self.base_key()
        rootfs, done = folder / "rootfs", folder / "rootfs.done"
        with _locked(folder / "lock", timeout=1200):
            if done.is_file():
                return rootfs
            shutil.rmtree(rootfs, ignore_errors=True)
            argv = [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ]
            self._logged("debootstrap", argv, timeout=1200)
            # No package caches in the image: apt-get update in a build fetches lists.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / leftover).glob("*"):
                    if item.is_file():
                        item.unlink()
            done.write_text(" ".join(BASE_PACKAGES) + "\n")
        return rootfs

    def base_image(self) -> str:
        """The Debian Python base as an image (`docker import`), for the final stages."""
        ref = f"driftline-base/python:{SUITE}-{self.base_key()}"
        if self.daemon.image_id(ref):
            return ref
        rootfs = self.rootfs()
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
        ]
        with subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        ) as tar:
            argv = ["import"]
            for change in changes:
                argv += ["--change", change]
            assert tar.stdout is not None
            self.daemon.docker(*argv, "-", ref, stdin=tar.stdout, timeout=600)
        if tar.returncode != 0:
            raise InfraError(f"tar of {rootfs} exited {tar.returncode}")
        return ref

    def build_base_image(self) -> str:
        """The base plus this machine's CA bundle: for build stages only."""
        base = self.base_image()
        bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
        digest = hashlib.sha256(bundle.read_bytes())
        digest.update((self.daemon.image_id(base) or "").encode())
        ref = f"driftline-base/python-build:{SUITE}-{digest.hexdigest()[:12]}"
        if self.daemon.image_id(ref):
            return ref
        with tempfile.TemporaryDirectory(prefix="driftline-build-base-") as tmp:
            shutil.copyfile(bundle, Path(tmp) / "ca.pem")
            (Path(tmp) / "Dockerfile").write_text(
                f"FROM {base}\n"
                f"COPY ca.pem {BUILD_CA_PATH}\n"
                f"ENV SSL_CERT_FILE={BUILD_CA_PATH} PIP_CERT={BUILD_CA_PATH} "
                f"REQUESTS_CA_BUNDLE={BUILD_CA_PATH} UV_NATIVE_TLS=1\n"
            )
            self.daemon.docker("build", "--network", "host", "-t", ref, tmp, timeout=300)
        return ref

    # -- the images -----------------------------------------------------------------

    def build_args(self, spec: ImageSpec) -> list[tuple[str, str]]:
        return [
            (spec.base_arg, self.base_image()),
            ("BUILD_IMAGE", self.build_base_image()),
            *spec.build_args,
        ]

    def content_key(self, spec: ImageSpec, args: Sequence[tuple[str, str]]) -> str:
        dockerfile = (self.repo / spec.dockerfile).read_text()
        digest = hashlib.sha256(dockerfile.encode())
        digest.update((self.repo / ".dockerignore").read_bytes())
        for name, value in args:
            resolved = self.daemon.image_id(value) if value.startswith("driftline-base/") else None
            digest.update(f"{name}={resolved or value}\0".encode())
        for source in copied_sources(dockerfile):
            _digest_tree(digest, self.repo, self.repo / source)
        return digest.hexdigest()[:16]

    def ref(self, name: str) -> str:
        spec = IMAGES[name]
        return f"{spec.repository}:k-{self.content_key(spec, self.build_args(spec))}"

    def build(self, name: str, timeout: float = 3600) -> BuiltImage:
        """The image of this tree: found by its content key, or built and tagged so.

        The build stage is tagged beside it (`k-KEY-build`), so that a change of source
        code reuses the dependency layers; images of older keys are removed, and with
        them the layers nothing uses any more.
        """
        spec = IMAGES[name]
        args = self.build_args(spec)
        key = f"k-{self.content_key(spec, args)}"
        dockerfile = (self.repo / spec.dockerfile).read_text()
        ref = f"{spec.repository}:{key}"
        started = time.monotonic()
        reused = self.daemon.image_id(ref) is not None
        if not reused:
            argv = [DOCKER, "-H", self.daemon.host, "build", "--network", "host"]
            argv += ["--file", str(self.repo / spec.dockerfile)]
            for arg, value in args:
                argv += ["--build-arg", f"{arg}={value}"]
            if re.search(r"^FROM .* AS build$", dockerfile, re.MULTILINE):
                stage = [*argv, "--target", "build", "--tag", f"{ref}-build", str(self.repo)]
                self._logged(f"build-{name}-stage", stage, timeout=timeout)
            self._logged(f"build-{name}", [*argv, "--tag", ref, str(self.repo)], timeout=timeout)
            self._remove_older(spec.repository, keep=(key, f"{key}-build"))
        return BuiltImage(
            name=name,
            ref=ref,
            size_bytes=self.daemon.image_size(ref),
            seconds=time.monotonic() - started,
            reused=reused,
        )

    def _remove_older(self, repository: str, keep: Sequence[str]) -> None:
        listed = self.daemon.docker("images", repository, "--format", "{{.Tag}}").stdout.split()
        older = [
            f"{repository}:{tag}" for tag in listed if tag.startswith("k-") and tag not in keep
        ]
        if older:
            self.daemon.docker("rmi", *older, check=False, timeout=600)
        self.daemon.docker("image", "prune", "--force", check=False, timeout=600)

    def _logged(self, what: str, argv: list[str], timeout: float) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{what}.log"
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        with open(log_path, "w") as log:
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env, check=False
            )
        if result.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise InfraError(f"{what} exited {result.returncode} (log {log_path}):\n{tail}")


# -- the size report ------------------------------------------------------------------

ABOUT = {
    "operator": "kopf, the rollout library; no torch, no ONNX Runtime",
    "inference": "`driftline[inference,joiner,drift,cpu]`: inference (FastAPI, ONNX Runtime "
    "CPU), the joiner and the scipy drift monitor; no torch",
    "services": "every part on CPU: torch (PyPI's CUDA wheels), alibi-detect, ONNX Runtime",
    "inference-gpu": "onnxruntime-gpu (built here on the Debian base: no CUDA libraries)",
    "dev-redis": "dev mode: Debian's redis-server",
    "dev-kafka": "dev mode: Apache Kafka's jars from Maven Central, Debian's Java 17 runtime",
    "dev-mlflow": "dev mode: the MLflow tracking server at the version the project pins",
}


def write_report(built: Sequence[BuiltImage], folder: Path, cold: bool = False) -> Path:
    """Merge `built` into folder/images.json and rewrite folder/images.md (a table).

    `cold`: the images were built from an empty cache, so their build times are the
    cold ones and are recorded (a rebuild reuses layers and would understate them).
    """
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / "images.json"
    rows: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError, ValueError):
        rows = json.loads(data_path.read_text())
    for image in built:
        row = rows.get(image.name, {})
        row.update({"repository": IMAGES[image.name].repository, "size_mb": round(image.size_mb)})
        if cold and not image.reused:
            row["cold_build_s"] = round(image.seconds)
        rows[image.name] = row
    data_path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Image sizes",
        "",
        "Built from docker/*.Dockerfile and docker/dev/*.Dockerfile (the chart's dev mode)",
        "on a Debian bookworm base (debootstrap minbase, Debian's Python 3.11) by",
        "`driftline_testing.images`; size as `docker image inspect` reports it",
        "(uncompressed). Cold build: seconds on this machine (2 shared cores) from an empty",
        "cache, after the base (debootstrap and import: about 70 s, once); the dev images",
        "download their packages (Debian's, Maven Central's, PyPI's) in that time.",
        "",
        "| image | size (MB) | cold build (s) | content |",
        "|---|---:|---:|---|",
    ]
    for name in IMAGES:
        if name in rows:
            row = rows[name]
            seconds = row.get("cold_build_s", "")
            lines.append(
                f"| `{row['repository']}` | {row['size_mb']} | {seconds} | {ABOUT[name]} |"
            )
    path = folder / "images.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["operator", "inference"], choices=IMAGES)
    parser.add_argument("--report", type=Path, help="merge the sizes into FOLDER/images.md")
    parser.add_argument("--save", type=Path, help="docker save each image into FOLDER")
    parser.add_argument(
        "--cold", action="store_true", help="the cache was empty: record the build times"
    )
    args = parser.parse_args(argv)
    built = []
    with DockerDaemon() as daemon:
        builder = ImageBuilder(daemon)
        for name in args.names:
            try:
                image = builder.build(name)
            except InfraError as exc:
                print(f"{name}: FAILED\n{exc}", file=sys.stderr)
                return 1
            state = "reused" if image.reused else "built"
            print(f"{image.ref}: {image.size_mb:.0f} MB, {state} in {image.seconds:.0f}s")
            built.append(image)
            if args.save:
                print(f"  saved {daemon.save(image.ref, args.save / f'{name}.tar')}")
    if args.report:
        print(write_report(built, args.report, cold=args.cold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
