"""`modeldeploy image`: a built bento to an OCI image, without Docker, and into a registry.

The image is exactly what `bentoml containerize` produces (BentoML's own Dockerfile: the
entrypoint serving the bento on port 3000, user bentoml with UID 1034, BENTO_PATH
/home/bentoml/bento), built by its buildah backend, so no Docker engine is needed. It builds on
the bento's `docker.base_image`, which must be pullable by buildah (`bentos/build.py
--base-image` sets it; the local cluster's python-base image is one). `buildah push` then sends
it to a registry.

Needs the `bento` extra (bentoml) and buildah on PATH.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

# An image label naming the bento it was built from: whoever builds by name can tell a stale
# image (same tag, other bento) from a current one without pulling it.
BENTO_LABEL = "dev.modeldeploy.bento"
BENTO_DIGEST_LABEL = "dev.modeldeploy.bento-digest"


class ImageError(RuntimeError):
    """The image could not be built or pushed; the message says why."""


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    bento: str
    image: str | None = None
    push: str | None = None
    tls_verify: bool = True
    network: str | None = "host"
    build_volume: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def bento_digest(path: str) -> str:
    """A digest of a bento's directory: every file's path and content."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def base_image(info: object) -> str:
    """The image a bento's Dockerfile builds FROM: BentoML's default (python:<version>-slim, from
    Docker Hub) unless the bentofile set docker.base_image."""
    image = getattr(info, "image", None)  # bento spec 2 (BentoML 1.4 services)
    if image is not None:
        return str(image.base_image)
    docker = getattr(info, "docker", None)
    return str(getattr(docker, "base_image", None) or "BentoML's default python image")


def default_image(tag: str) -> str:
    """`name:version` of the bento, as `bentoml containerize` tags it."""
    name, _, version = tag.partition(":")
    return f"{name}:{version or 'latest'}"


def build(request: ImageRequest) -> str:
    """Build (and push, when asked) the image of a bento; its name."""
    if shutil.which("buildah") is None:
        raise ImageError("buildah is not installed (Debian: apt-get install buildah fuse-overlayfs)")
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        bento = bentoml.bentos.get(request.bento)
    except NotFound as err:
        raise ImageError(f"no bento {request.bento} in the store ({err}); build it first (bentos/build.py)") from None
    tag = str(bento.tag)
    base = base_image(bento.info)
    image = request.image or default_image(tag)
    labels = {BENTO_LABEL: tag, BENTO_DIGEST_LABEL: bento_digest(bento.path), **request.labels}
    try:
        bentoml.container.build(
            tag,
            backend="buildah",
            image_tag=(image,),
            label=labels,
            network=request.network,
            volume=request.build_volume,
        )
    except BentoMLException as err:
        failed: str | None = str(err)
    else:
        # BentoML logs a failed build and returns: whether the image exists says how it went.
        failed = None if _image_exists(image) else "buildah made no image (its error is above)"
    if failed is not None:
        raise ImageError(
            f"building {image} from {tag} on {base} failed: {failed}"
            " (the base image is the bento's docker.base_image; bentos/build.py --base-image sets it)"
        )
    if request.push is not None:
        push(image, request.push or f"docker://{image}", tls_verify=request.tls_verify)
    return image


def _image_exists(image: str) -> bool:
    result = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, check=False)
    return result.returncode == 0


def push(image: str, destination: str, *, tls_verify: bool = True) -> None:
    cmd = ["buildah", "push", "--quiet", f"--tls-verify={str(tls_verify).lower()}", image, destination]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"pushing {image} to {destination} failed: {result.stderr.strip()}")


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ImageError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels
