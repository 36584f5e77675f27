"""Images of the example bentos (bentos/), built the way a user would: `bentos/build.py` builds the
bento on the local python-base image, `modeldeploy image` containerizes it with BentoML's buildah
backend and pushes it to the local registry.

An image is named ``registry.localhost/<bento>:<version>`` and labelled with a digest of what it
was built from (the bento's folder, the shared bento code, the build script, the lock file, the
base image): an image whose label matches is current and not built again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from localcluster.images import Builder
from localcluster.node import REGISTRY_HOST
from localcluster.process import ClusterError
from localcluster.versions import REPO_ROOT, cache_dir

BENTOS = REPO_ROOT / "bentos"
SOURCE_LABEL = "dev.modeldeploy.source-digest"


def image_name(bento: str, version: str) -> str:
    return f"{REGISTRY_HOST}/{bento}:{version}"


def source_digest(bento: str, base_image: str) -> str:
    h = hashlib.sha256(base_image.encode())
    files = [BENTOS / "build.py", REPO_ROOT / "requirements" / "lock.txt"]
    for folder in (BENTOS / bento, BENTOS / "common"):
        files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: list[str], env: Mapping[str, str], what: str) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(env), check=False, timeout=1800)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed ({result.returncode}):\n{result.stderr.strip()[-3000:]}")
    return result.stdout.strip()


def ensure(
    builder: Builder,
    bento: str = "iris-classifier",
    version: str = "v1",
    *,
    python: str | None = None,
) -> str:
    """The bento's image in the local registry, built unless it is current."""
    python = python or python_for_bentos()
    name = image_name(bento, version)
    base = builder.python_base()
    digest = source_digest(bento, base)
    if builder.labels(name).get(SOURCE_LABEL) == digest:
        return name
    builder.log(f"building bento {bento}:{version} and its image {name}")
    with tempfile.TemporaryDirectory(prefix="bentoml-home-") as home:
        env = {**builder.env(), "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
        build = [python, str(BENTOS / "build.py"), "--bento", bento, "--version", version, "--base-image", base]
        tag = _run(build, env, f"bentos/build.py --bento {bento}")
        image = [python, "-m", "modeldeploy.cli", "image", tag, "-t", name]
        image += ["--push", builder.push_destination(name), "--no-tls-verify", f"--label={SOURCE_LABEL}={digest}"]
        image += [f"--build-volume={v}" for v in builder.build_volumes()]
        _run(image, env, f"modeldeploy image {tag}")
    return name


def archive(
    builder: Builder, bento: str = "iris-classifier", version: str = "v1", *, python: str | None = None
) -> Path:
    """The bento exported by `bentoml export` (<bento>-<version>.bento), as a model store holds it;
    kept in the cache under the digest of its sources, built when missing."""
    digest = source_digest(bento, builder.python_base())
    path = cache_dir() / "bento-archives" / digest / f"{bento}-{version}.bento"
    if path.exists():
        return path
    builder.log(f"building and exporting bento {bento}:{version}")
    with tempfile.TemporaryDirectory(prefix="bentoml-home-") as home, tempfile.TemporaryDirectory() as out:
        env = {**builder.env(), "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
        build = [python or python_for_bentos(), str(BENTOS / "build.py"), "--bento", bento, "--version", version]
        _run([*build, "--base-image", builder.python_base(), "--export", out], env, f"bentos/build.py --bento {bento}")
        path.parent.mkdir(parents=True, exist_ok=True)
        (Path(out) / path.name).replace(path)
    return path


def python_for_bentos() -> str:
    """The interpreter with bentoml installed: this one when it has it, else the project's venv."""
    if importlib.util.find_spec("bentoml") is not None:
        return sys.executable
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise ClusterError("building bento images needs bentoml: run `make setup` first")
