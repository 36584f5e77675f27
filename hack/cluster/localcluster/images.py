"""Images without Docker: built from Debian packages and PyPI wheels with buildah, pushed to the
local registry, never pulled from anywhere else.

- ``pause``: the pod sandbox, a tiny static C program (pause.c).
- ``python-base``: a Debian rootfs from ``mmdebstrap --variant=minbase`` with python3 and pip;
  the FROM of every Python image here, and the ``docker.base_image`` of the example bentos, so
  that ``bentoml containerize --backend buildah`` builds exactly BentoML's own Dockerfile on it.
- ``bento-runtime``: python-base plus a venv with bentoml and the example bentos' frameworks (the
  locked versions), for ModelDeployments that give a bento ``tag`` instead of an image.
- ``operator``: the project's Dockerfile, built by ``buildah bud`` on python-base.

Every image's tag ends in a digest of its inputs, so a changed input makes a new image and an
unchanged one is found in the registry and not built again. Builds that download (Debian
packages, PyPI wheels) go through this machine's egress, whose CA bundle is bind-mounted into
the build for the duration of a RUN step only: nothing of the host is baked into an image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from localcluster import registry
from localcluster.node import PAUSE_IMAGE, REGISTRY_HOST
from localcluster.process import ClusterError
from localcluster.versions import REPO_ROOT, cache_dir, ensure_binaries, load_versions

HERE = Path(__file__).resolve().parent
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRRORS = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
# What BentoML's Dockerfile (base.j2, used with a custom base_image) needs of its base: a Python
# of the bento's version (3.11 is bookworm's), pip to install uv, groupadd/useradd, bash.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "passwd", "ca-certificates")
BASE_ENV = {
    "LANG": "C.UTF-8",
    # BentoML's template installs uv with the system pip (PEP 668 would refuse it).
    "PIP_BREAK_SYSTEM_PACKAGES": "1",
    # pip and uv verify with the system bundle (Debian's; the build mounts this machine's there).
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
PYTHON_VERSION = "3.11"
# bentoml, the example bentos' frameworks and s3fs, resolved by `make lock`.
RUNTIME_REQUIREMENTS = REPO_ROOT / "requirements" / "bento-runtime.txt"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "gcc": "gcc", "skopeo": "skopeo"}

Log = Callable[[str], None]


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:10]


def python_base_image() -> str:
    tag = digest(DEBIAN_SUITE, *DEBIAN_MIRRORS, *BASE_PACKAGES, json.dumps(BASE_ENV, sort_keys=True))
    return f"{REGISTRY_HOST}/modeldeploy/python-base:{PYTHON_VERSION}-{tag}"


def runtime_image() -> str:
    return f"{REGISTRY_HOST}/modeldeploy/bento-runtime:{digest(python_base_image(), RUNTIME_REQUIREMENTS.read_bytes())}"


def operator_image() -> str:
    """The operator image's name: a digest of the Dockerfile and everything it copies."""
    inputs = [REPO_ROOT / "Dockerfile", REPO_ROOT / "pyproject.toml", REPO_ROOT / "requirements" / "lock.txt"]
    inputs += sorted(p for p in (REPO_ROOT / "operator").rglob("*.py"))
    parts = [python_base_image(), *(str(p.relative_to(REPO_ROOT)) for p in inputs), *(p.read_bytes() for p in inputs)]
    return f"{REGISTRY_HOST}/modeldeploy/operator:{digest(*parts)}"


def missing_tools() -> list[str]:
    """Debian packages the image builds need that are not installed."""
    return sorted({pkg for tool, pkg in DEBIAN_TOOLS.items() if shutil.which(tool) is None})


@dataclasses.dataclass(frozen=True)
class Builder:
    """buildah (and skopeo) configured for the local registry of one running cluster."""

    registry_port: int
    work: Path
    log: Log = print

    @property
    def registries_conf(self) -> Path:
        return self.work / "registries.conf"

    @property
    def storage_conf(self) -> Path:
        return self.work / "storage.conf"

    def prepare(self) -> Builder:
        self.work.mkdir(parents=True, exist_ok=True)
        self.registries_conf.write_text(registry.registries_conf(self.registry_port))
        graphroot = cache_dir() / "buildah" / "storage"
        runroot = Path("/run/modeldeploy/buildah")
        self.storage_conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{graphroot}"\nrunroot = "{runroot}"\n'
        )
        return self

    def env(self) -> dict[str, str]:
        """For buildah, skopeo and `bentoml containerize --backend buildah` (which runs buildah)."""
        return {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "BUILDAH_FORMAT": "oci",
            "BUILDAH_ISOLATION": "chroot",
        }

    def build_volumes(self) -> list[str]:
        """Mounts for RUN steps: this machine's CA bundle (its egress needs it), read-only."""
        return [f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.exists() else []

    def push_destination(self, image: str) -> str:
        """Where to push `registry.localhost/x:y`: the registry's loopback port (no name lookup)."""
        return f"docker://127.0.0.1:{self.registry_port}/{image.removeprefix(REGISTRY_HOST + '/')}"

    def has(self, image: str) -> bool:
        return registry.has_image(self.registry_port, image)

    def run(self, *cmd: str, timeout: float = 1800, quiet: bool = False) -> str:
        started = time.monotonic()
        result = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), check=False, timeout=timeout)
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd[:3])} ... failed ({result.returncode}) after {time.monotonic() - started:.0f}s:\n"
                f"{result.stderr.strip()[-3000:]}"
            )
        if not quiet and time.monotonic() - started > 5:
            self.log(f"  {' '.join(cmd[:2])}: {time.monotonic() - started:.0f}s")
        return result.stdout.strip()

    def push(self, image: str) -> None:
        self.run("buildah", "push", "--tls-verify=false", "--quiet", image, self.push_destination(image))

    def commit(self, container: str, image: str, config: Sequence[str]) -> None:
        if config:
            self.run("buildah", "config", *config, container)
        self.run("buildah", "commit", "--quiet", "--rm", container, image)
        self.push(image)

    # -- the images -------------------------------------------------------------------

    def ensure(self, image: str, build: Callable[[str], None], what: str) -> str:
        if self.has(image):
            return image
        self.log(f"building {what} image {image} (first time only; cached in the registry)")
        started = time.monotonic()
        build(image)
        self.log(f"{what} image pushed in {time.monotonic() - started:.0f}s")
        return image

    def pause(self) -> str:
        return self.ensure(PAUSE_IMAGE, self._build_pause, "pause")

    def _build_pause(self, image: str) -> None:
        with tempfile.TemporaryDirectory(prefix="pause-") as tmp:
            binary = Path(tmp) / "pause"
            subprocess.run(
                ["gcc", "-static", "-Os", "-s", "-o", str(binary), str(HERE / "pause.c")],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            ctr = self.run("buildah", "from", "--quiet", "scratch")
            self.run("buildah", "copy", "--quiet", ctr, str(binary), "/pause")
            self.commit(ctr, image, ["--entrypoint", '["/pause"]', "--user", "65535:65535"])

    def python_base(self) -> str:
        return self.ensure(python_base_image(), self._build_python_base, "python base")

    def _build_python_base(self, image: str) -> None:
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=self.work) as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            self.run(
                "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--aptopt=Acquire::Retries \"3\"",
                DEBIAN_SUITE, str(rootfs), *DEBIAN_MIRRORS,
            )  # fmt: skip
            ctr = self.run("buildah", "from", "--quiet", "scratch")
            self.run("buildah", "add", "--quiet", ctr, str(rootfs), "/")
        config = [f"--env={k}={v}" for k, v in BASE_ENV.items()]
        self.commit(ctr, image, [*config, "--cmd", '["python3"]'])

    def runtime(self) -> str:
        return self.ensure(runtime_image(), self._build_runtime, "bento runtime")

    def _build_runtime(self, image: str) -> None:
        base = self.python_base()
        ctr = self.run("buildah", "from", "--quiet", "--tls-verify=false", base)
        volumes = [f"--volume={v}" for v in self.build_volumes()]
        self.run("buildah", "copy", "--quiet", ctr, str(RUNTIME_REQUIREMENTS), "/app/requirements.txt")
        script = (
            "set -e; python3 -m venv /app/.venv; "
            "/app/.venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet -r /app/requirements.txt; "
            "groupadd -g 1034 bentoml; useradd -m -u 1034 -g 1034 -r bentoml"
        )
        self.run("buildah", "run", "--network=host", *volumes, ctr, "--", "sh", "-c", script)
        self.commit(
            ctr,
            image,
            [
                "--env=PATH=/app/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env=VIRTUAL_ENV=/app/.venv",
                "--user=1034:1034",
                "--workingdir=/home/bentoml",
                "--entrypoint=[]",
                '--cmd=["bentoml", "--help"]',
            ],
        )

    def operator(self) -> str:
        return self.ensure(operator_image(), self._build_operator, "operator")

    def _build_operator(self, image: str) -> None:
        base = self.python_base()
        volumes = [f"--volume={v}" for v in self.build_volumes()]
        self.run(
            "buildah", "bud", "--quiet", "--network=host", "--tls-verify=false", "--layers",
            f"--build-arg=BASE_IMAGE={base}", *volumes,
            "-f", str(REPO_ROOT / "Dockerfile"), "-t", image, str(REPO_ROOT),
        )  # fmt: skip
        self.push(image)

    def minio(self) -> str:
        """MinIO's static binary alone in an image (the model-store tests' S3 server)."""
        version = load_versions()["MINIO_VERSION"]
        return self.ensure(f"{REGISTRY_HOST}/modeldeploy/minio:{digest(version)}", self._build_minio, "minio")

    def _build_minio(self, image: str) -> None:
        binary = ensure_binaries(("minio",))["minio"]
        ctr = self.run("buildah", "from", "--quiet", "scratch")
        self.run("buildah", "copy", "--quiet", "--chmod=0755", ctr, str(binary), "/minio")
        self.commit(ctr, image, ["--entrypoint", '["/minio"]', "--user", "1000:1000", "--env=HOME=/data"])

    def runtime_trusting(self, ca_certificate: Path) -> str:
        """The bento runtime image, also trusting CA_CERTIFICATE (a store's private CA)."""
        base = self.runtime()
        pem = ca_certificate.read_bytes()
        image = f"{REGISTRY_HOST}/modeldeploy/bento-runtime-private-ca:{digest(base, pem)}"

        def build(image: str) -> None:
            ctr = self.run("buildah", "from", "--quiet", "--tls-verify=false", base)
            self.run(
                "buildah", "copy", "--quiet", ctr, str(ca_certificate), "/usr/local/share/ca-certificates/store.crt"
            )
            self.run("buildah", "run", "--user=0:0", ctr, "--", "update-ca-certificates")
            self.commit(ctr, image, ["--user=1034:1034"])

        return self.ensure(image, build, "bento runtime trusting a private CA")

    def labels(self, image: str) -> Mapping[str, str]:
        """The image's labels, read from the registry (empty when it is not there)."""
        result = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", self.push_destination(image)],
            capture_output=True, text=True, env=self.env(), check=False, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            return {}
        labels: Mapping[str, str] = json.loads(result.stdout).get("Labels") or {}
        return labels
