"""Train and build an example bento; print its tag.

Usage::

    python bentos/build.py [--bento iris-classifier] [--version VERSION]
                           [--force] [--skip-train] [--export DIR]

Works in the BentoML home given by ``$BENTOML_HOME`` (default ``~/bentoml``):
trains the bento's model into its model store (``train.py`` in the bento's
folder), then runs the equivalent of ``bentoml build`` on the folder's
``bentofile.yaml``. With ``--export DIR`` it also writes the bento, models
included, to ``DIR/<name>-<version>.bento`` (``bentoml export``).
Building a ``--version`` that is already in the store fails, unless
``--force`` is given: then the old bento is deleted first.

Only the tag (``name:version``) goes to stdout; everything else goes to
stderr, so ``TAG=$(python bentos/build.py)`` works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

BENTOS_DIR = Path(__file__).resolve().parent


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
    train: bool = True,
    export_dir: str | None = None,
    force: bool = False,
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
        built = bentoml.bentos.build_bentofile(bentofile=str(bentofile), build_ctx=str(bento_dir), version=version)
        if export_dir:
            os.makedirs(export_dir, exist_ok=True)
            path = bentoml.bentos.export_bento(built.tag, export_dir)
            print(f"exported {built.tag} to {path}", file=sys.stderr)
    return str(built.tag)


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
    args = parser.parse_args(argv)
    try:
        tag = build(
            args.bento,
            args.version,
            train=not args.skip_train,
            export_dir=args.export,
            force=args.force,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
