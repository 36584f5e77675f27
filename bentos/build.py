"""Train and build an example bento; print its tag.

Usage::

    python bentos/build.py [--bento iris-classifier] [--version VERSION]
                           [--force] [--skip-train] [--export DIR]
                           [--base-image IMAGE]

Works in the BentoML home given by ``$BENTOML_HOME`` (default ``~/bentoml``):
trains the bento's model into its model store (``train.py`` in the bento's
folder), then runs the equivalent of ``bentoml build`` on the folder's
``bentofile.yaml``. The build context is a temporary copy of the folder
with the files of ``bentos/common/`` (code the example bentos share) beside
the bento's own, for the bentofile's ``include`` to pick from. With
``--export DIR`` it also writes the bento, models included, to
``DIR/<name>-<version>.bento`` (``bentoml export``).
Building a ``--version`` that is already in the store fails, unless
``--force`` is given: then the old bento is deleted first. ``--base-image``
sets the bentofile's ``docker.base_image`` for this build, the image
``bentoml containerize`` builds on (the local cluster's python-base image,
where no image can be pulled from Docker Hub).

Only the tag (``name:version``) goes to stdout; everything else goes to
stderr, so ``TAG=$(python bentos/build.py)`` works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENTOS_DIR = Path(__file__).resolve().parent
COMMON_DIR = BENTOS_DIR / "common"


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bento_{path.parent.name}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(
    bento: str = "iris-classifier",
    version: str | None = None,
    *,
    train: bool = True,
    export_dir: str | None = None,
    force: bool = False,
    base_image: str | None = None,
) -> str:
    """Train (unless ``train`` is false) and build the bento; return its tag."""
    import bentoml
    import yaml
    from bentoml.exceptions import NotFound

    bento_dir = BENTOS_DIR / bento
    bentofile = bento_dir / "bentofile.yaml"
    if not bentofile.is_file():
        raise FileNotFoundError(f"no bentofile.yaml in {bento_dir}")
    if version is not None:
        name = yaml.safe_load(bentofile.read_text()).get("name") or bento
        tag = bentoml.Tag(name, version)
        try:
            bentoml.bentos.get(tag)
        except NotFound:
            pass
        else:
            if not force:
                raise FileExistsError(f"bento {tag} already exists (use --force to replace it)")
            bentoml.bentos.delete(tag)
    # Logs and bentoml's banners go to stderr: stdout carries only the tag.
    with contextlib.redirect_stdout(sys.stderr):
        if train:
            train_py = bento_dir / "train.py"
            if train_py.is_file():
                _load_module(train_py).main([])
        with _bentofile(bentofile, base_image) as path, _build_context(bento_dir) as build_ctx:
            built = bentoml.bentos.build_bentofile(bentofile=path, build_ctx=str(build_ctx), version=version)
        if export_dir:
            os.makedirs(export_dir, exist_ok=True)
            path = bentoml.bentos.export_bento(built.tag, export_dir)
            print(f"exported {built.tag} to {path}", file=sys.stderr)
    return str(built.tag)


@contextlib.contextmanager
def _build_context(bento_dir: Path) -> Iterator[Path]:
    """A temporary copy of the bento's folder with the files of ``bentos/common/`` added."""
    # BentoML refuses ``../`` includes and packs a symlink as a link, dangling in the bento.
    ignore = shutil.ignore_patterns("__pycache__")
    with tempfile.TemporaryDirectory(prefix=f"bento-{bento_dir.name}-") as tmp:
        shutil.copytree(bento_dir, tmp, ignore=ignore, dirs_exist_ok=True)
        shutil.copytree(COMMON_DIR, tmp, ignore=ignore, dirs_exist_ok=True)
        yield Path(tmp)


@contextlib.contextmanager
def _bentofile(bentofile: Path, base_image: str | None) -> Iterator[str]:
    """The bentofile, or a copy of it whose docker options build on ``base_image``."""
    if base_image is None:
        yield str(bentofile)
        return
    import yaml

    config = yaml.safe_load(bentofile.read_text())
    # BentoML ignores distro and python_version with a base_image (and warns): only the base is kept.
    config["docker"] = {"base_image": base_image}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="bentofile-") as handle:
        yaml.safe_dump(config, handle)
        handle.flush()
        yield handle.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and build an example bento; print its tag.")
    parser.add_argument(
        "--bento",
        default="iris-classifier",
        help="folder under bentos/ (default: iris-classifier)",
    )
    parser.add_argument("--version", help="bento version (default: generated)")
    parser.add_argument("--force", action="store_true", help="replace an existing bento of that version")
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="do not train; use the model already in the store",
    )
    parser.add_argument("--export", metavar="DIR", help="also export the bento to DIR")
    parser.add_argument("--base-image", metavar="IMAGE", help="docker.base_image for `bentoml containerize`")
    args = parser.parse_args(argv)
    try:
        tag = build(
            args.bento,
            args.version,
            train=not args.skip_train,
            export_dir=args.export,
            force=args.force,
            base_image=args.base_image,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
