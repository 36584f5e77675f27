"""Figures against their targets: every benchmark returns Figures, `bench.py` prints them and fails on a miss."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured value, its target, and the floor it is judged against where one exists."""

    name: str
    value: float
    unit: str
    target: str  # as a person reads it: "< 100 ms", "<= 1.15x floor"
    met: bool | None  # None: reported, not judged (a floor, a breakdown)
    floor: float | None = None
    detail: str = ""

    def line(self) -> str:
        verdict = {True: "yes", False: "NO", None: ""}[self.met]
        floor = f"{self.floor:.1f} {self.unit}" if self.floor is not None else ""
        value = f"{self.value:.{_decimals(self.value)}f} {self.unit}"
        text = f"  {self.name:<52} {value:>14} {floor:>12}  {self.target:<22} {verdict:>3}"
        return text + (f"\n  {'':<52} {self.detail}" if self.detail else "")


def _decimals(value: float) -> int:
    return 0 if abs(value) >= 100 else 1 if abs(value) >= 1 else 2


def header() -> str:
    return f"  {'figure':<52} {'measured':>14} {'floor':>12}  {'target':<22} met"


def within(name: str, value: float, floor: float, *, ratio: float, unit: str, detail: str = "") -> Figure:
    """A figure judged against `ratio` times the floor measured in the same run."""
    return Figure(
        name, value, unit, f"<= {ratio:g}x floor (x{value / floor:.2f})", value <= ratio * floor, floor, detail
    )


def below(name: str, value: float, limit: float, unit: str, detail: str = "", *, shown: str = "") -> Figure:
    """A figure judged against a limit; `shown` says the limit as the target is written, if not in `unit`."""
    return Figure(name, value, unit, shown or f"< {limit:g} {unit}", value < limit, None, detail)


def info(name: str, value: float, unit: str, detail: str = "") -> Figure:
    return Figure(name, value, unit, "", None, None, detail)


def print_all(title: str, figures: Iterable[Figure], out: Callable[[str], None] = print) -> bool:
    """Print the figures under a title; whether every judged one met its target."""
    figures = list(figures)
    out(title)
    out(header())
    for figure in figures:
        out(figure.line())
    return all(f.met is not False for f in figures)
