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
from localcluster.versions import REPO_ROOT

BENTOS = REPO_ROOT / "bentos"
SOURCE_LABEL = "dev.modeldeploy.source-digest"


def image_name(bento: str, version: str) -> str:
    return f"{REGISTRY_HOST}/{bento}:{version}"


def source_digest(bento: str, base_image: str, extra: Mapping[str, str] | None = None) -> str:
    h = hashlib.sha256(base_image.encode())
    files = [BENTOS / "build.py", REPO_ROOT / "requirements" / "lock.txt"]
    for folder in (BENTOS / bento, BENTOS / "common"):
        files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    for key, value in sorted((extra or {}).items()):
        h.update(f"{key}={value}".encode())
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
    export_dir: Path | None = None,
) -> str:
    """The bento's image in the local registry (built unless current); with export_dir, the bento
    archive (`bentoml export`, <bento>-<version>.bento) is written there too."""
    python = python or python_for_bentos()
    name = image_name(bento, version)
    base = builder.python_base()
    digest = source_digest(bento, base)
    archive = export_dir / f"{bento}-{version}.bento" if export_dir else None
    if builder.labels(name).get(SOURCE_LABEL) == digest and (archive is None or archive.exists()):
        return name
    builder.log(f"building bento {bento}:{version} and its image {name}")
    with tempfile.TemporaryDirectory(prefix="bentoml-home-") as home:
        env = {**builder.env(), "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
        build = [python, str(BENTOS / "build.py"), "--bento", bento, "--version", version, "--base-image", base]
        if export_dir is not None:
            export_dir.mkdir(parents=True, exist_ok=True)
            build += ["--export", str(export_dir)]
        tag = _run(build, env, f"bentos/build.py --bento {bento}")
        image = [python, "-m", "modeldeploy.cli", "image", tag, "-t", name]
        image += ["--push", builder.push_destination(name), "--no-tls-verify", f"--label={SOURCE_LABEL}={digest}"]
        image += [f"--build-volume={v}" for v in builder.build_volumes()]
        _run(image, env, f"modeldeploy image {tag}")
    return name


def python_for_bentos() -> str:
    """The interpreter with bentoml installed: this one when it has it, else the project's venv."""
    if importlib.util.find_spec("bentoml") is not None:
        return sys.executable
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise ClusterError("building bento images needs bentoml: run `make setup` first")
