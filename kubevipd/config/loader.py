"""Load /etc/kubevip.yaml: YAML with positions, JSON Schema, semantic checks, then the model.

Every problem becomes a Diagnostic with file, line and column, and all of them are reported at once;
a config with any error never yields a Config, so the daemon cannot start half-configured.

The work is done in the modules this one calls, in order: yaml_source (the text to a ruamel
tree), yaml_tree (plain values and positions), schema_errors (JSON Schema), checks and
vip_checks (the semantic rules, and the model). This module keeps the entry points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubevipd.config.checks import Checker
from kubevipd.config.errors import ConfigError, Diagnostic
from kubevipd.config.model import Config, not_supported_yet
from kubevipd.config.schema_errors import SECRET_KEYS, schema, schema_errors, text_errors
from kubevipd.config.vip_checks import unusable_reason
from kubevipd.config.yaml_source import parse_yaml
from kubevipd.config.yaml_tree import FieldPath, PathItem, TooLarge, field_name, position, to_plain

__all__ = [
    "SECRET_KEYS",
    "FieldPath",
    "Loaded",
    "PathItem",
    "cannot_run",
    "field_name",
    "load",
    "load_text",
    "schema",
    "unusable_reason",
]


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: Sequence[Diagnostic]
    # What this version of the daemon cannot run yet (see cannot_run()), at its position.
    unsupported: Sequence[Diagnostic] = ()


def load(path: str | Path) -> Loaded:
    """Read, validate and convert a config file; raises ConfigError listing every problem."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([Diagnostic(name, None, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError(
            [Diagnostic(name, None, None, "", "is a directory, not a file")]
        ) from None
    except PermissionError:
        msg = (
            "cannot read: permission denied (the daemon runs as the user kubevipd: make the "
            "file readable by it, e.g. mode 0644, or 0640 with group kubevipd)"
        )
        raise ConfigError([Diagnostic(name, None, None, "", msg)]) from None
    except OSError as e:
        raise ConfigError(
            [Diagnostic(name, None, None, "", f"cannot read: {e.strerror}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        # The bytes before the first bad one decode: the column counts characters, as an
        # editor does.
        start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[start : e.start].decode("utf-8")) + 1
        msg = f"is not UTF-8 text (byte 0x{data[e.start]:02x})"
        raise ConfigError([Diagnostic(name, line, column, "", msg)]) from None
    return load_text(text, name, source=Path(path))


def load_text(text: str, filename: str = "<config>", source: Path | None = None) -> Loaded:
    """Validate YAML text as a kubevipd config; raises ConfigError listing every problem."""
    root, notes = parse_yaml(text, filename)
    try:
        doc = to_plain(root)
    except TooLarge as e:
        line, col = position(root, e.path)
        name = field_name(e.path[:1] if e.top_level else e.path)
        raise ConfigError([Diagnostic(filename, line, col, name, e.message)]) from None
    found = list(schema_errors(doc, root, filename))
    found += text_errors(doc, root, filename, {path for path, _ in found})
    errors = [d for _, d in found]
    # Semantic checks assume the schema's shapes, so they run only on the top-level sections
    # the schema found nothing wrong with; together, the operator sees every error at once.
    broken = {str(path[0]) for path, _ in found if path}
    checker = Checker(doc, root, filename)
    config = checker.build(source, skip=broken)
    errors += checker.errors
    if errors or config is None:
        raise ConfigError(errors)
    unsupported = [
        Diagnostic(
            filename, *position(root, path, at_key=path[-1] != "mode"), field_name(path), msg
        )
        for path, msg in not_supported_yet(config)
    ]
    return Loaded(config, tuple(sorted(notes + checker.warnings)), tuple(unsupported))


def cannot_run(loaded: Loaded) -> Sequence[Diagnostic]:
    """Why this version of ``kubevipd run`` refuses a valid config, one error per reason, at its
    position (empty: it runs it). check-config and run both ask; render-manifest does not, since
    kube-vip runs such a config. The reasons are config.model.not_supported_yet()'s, which the
    daemon checks again on a reload."""
    return loaded.unsupported
