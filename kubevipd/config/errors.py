"""Config diagnostics in the compiler format ``FILE:LINE:COLUMN: field.path: message``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One finding in a config file. Messages never carry a secret's value."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        """One line, whatever the file name, key or message hold (a newline, a NUL, a lone
        surrogate are shown escaped)."""
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        label = "warning: " if self.severity == "warning" else ""
        field = f" {self.field}:" if self.field else ""
        return printable(f"{where}:{field} {label}{self.message}")


def printable(text: str) -> str:
    """``text`` with what does not print (a newline, a NUL, a lone surrogate) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class ConfigError(Exception):
    """The config cannot be used; carries every error found, in file order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: Sequence[Diagnostic] = sorted(
            diagnostics, key=lambda d: (d.line or 0, d.column or 0, d.field)
        )
        super().__init__("\n".join(str(d) for d in self.diagnostics))
