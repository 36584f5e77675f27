"""The local OCI registry (distribution v3): where images built here are pushed and the node pulls.

It listens on a free loopback port; its storage lives in the cache, shared by every cluster of
this machine, so an image built once is there for every later run. Clients never use the port
in image names: they name `registry.localhost/...` (node.REGISTRY_HOST), and containerd's
hosts.toml and buildah's registries.conf map that name to this run's port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from localcluster.node import REGISTRY_HOST
from localcluster.versions import Binaries, cache_dir


def storage_dir() -> Path:
    return cache_dir() / "registry"


def config(port: int) -> str:
    """distribution's configuration (YAML; JSON is YAML)."""
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage_dir())}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": "local-registry-of-modeldeploy"},
            "health": {"storagedriver": {"enabled": False}},
        },
        indent=2,
    )


def args(b: Binaries, config_file: Path) -> list[str]:
    return [str(b["registry"]), "serve", str(config_file)]


def health_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/"


def registries_conf(port: int) -> str:
    """containers-registries.conf(5) for buildah and skopeo: the registry's name to its port,
    plain http, no search of unqualified names, and Docker Hub (where a Dockerfile's short names
    go) blocked, so a FROM that is not ours fails at once instead of looking a name up."""
    return (
        "unqualified-search-registries = []\n"
        f'[[registry]]\nprefix = "{REGISTRY_HOST}"\nlocation = "127.0.0.1:{port}"\ninsecure = true\n'
        f'[[registry]]\nlocation = "127.0.0.1:{port}"\ninsecure = true\n'
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\nblocked = true\n'
    )


def has_image(port: int, reference: str) -> bool:
    """Whether `registry.localhost/<repo>:<tag>` is in the registry (a HEAD of its manifest)."""
    name = reference.removeprefix(f"{REGISTRY_HOST}/")
    repo, _, tag = name.rpartition(":")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": ", ".join(
                [
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                ]
            )
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
