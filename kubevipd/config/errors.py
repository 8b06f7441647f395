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
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        label = "warning: " if self.severity == "warning" else ""
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {label}{self.message}"


class ConfigError(Exception):
    """The config cannot be used; carries every error found, in file order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: Sequence[Diagnostic] = sorted(
            diagnostics, key=lambda d: (d.line or 0, d.column or 0, d.field)
        )
        super().__init__("\n".join(str(d) for d in self.diagnostics))
