"""`python -m localcluster`'s command line (the parser alone: no cluster)."""

from __future__ import annotations

import pytest

from localcluster.__main__ import IMAGES, _parser


def test_images_without_names_means_all() -> None:
    # Python 3.11's argparse refused a bare `images` when the names had choices= (the empty default
    # was checked against them): the cold-build measurement caught it.
    assert _parser().parse_args(["images"]).names == []
    assert _parser().parse_args(["images", "pause", "operator"]).names == ["pause", "operator"]
    assert set(IMAGES) == {"pause", "python-base", "bento-runtime", "operator"}


def test_images_names_an_unknown_image(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["images", "bogus"])
    assert exited.value.code == 2
    assert "no image 'bogus' (choose from pause, python-base, bento-runtime, operator)" in capsys.readouterr().err
