"""Load /etc/kubevip.yaml: YAML with positions, JSON Schema, semantic checks, then the model.

Every problem becomes a Diagnostic with file, line and column, and all of them are reported at once;
a config with any error never yields a Config, so the daemon cannot start half-configured.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from kubevipd.config.errors import ConfigError, Diagnostic, printable
from kubevipd.config.model import (
    AnnounceSpec,
    ArpSpec,
    BgpPeer,
    BgpSpec,
    Config,
    DhcpSource,
    DnsSource,
    Duration,
    ElectionSpec,
    HealthSpec,
    IPAddress,
    MetalSpec,
    MetricsSpec,
    SecretRef,
    VipSpec,
    default_election_server,
    default_health_url,
    not_supported_yet,
)

PathItem = str | int
FieldPath = tuple[PathItem, ...]

# Keys whose values are secrets: never echoed in any message.
SECRET_KEYS = frozenset({"password", "token"})
_CLIENT_GO_JITTER = 1.2  # client-go: RenewDeadline must exceed JitterFactor * RetryPeriod
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: Sequence[Diagnostic]
    # What this version of the daemon cannot run yet (see cannot_run()), at its position.
    unsupported: Sequence[Diagnostic] = ()


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package."""
    text = resources.files("kubevipd.config").joinpath("schema.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


def field_name(path: Sequence[PathItem]) -> str:
    """``('announce', 'bgp', 'peers', 0, 'as')`` -> ``announce.bgp.peers[0].as``.

    A key that is not printable text on one line (``"a\\nb"``, ``""``, a lone surrogate) is
    shown quoted and escaped, as ``vip["a\\nb"]``: a diagnostic is always one line.
    """
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        elif not item or not item.isprintable():
            out += f"[{json.dumps(item)}]"
        else:
            out += f".{item}" if out else item
    return out


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
    root, notes = _parse_yaml(text, filename)
    try:
        doc = _plain(root)
    except _TooLarge as e:
        line, col = _position(root, e.path)
        name = field_name(e.path[:1] if e.top_level else e.path)
        raise ConfigError([Diagnostic(filename, line, col, name, e.message)]) from None
    found = list(_schema_errors(doc, root, filename))
    found += _text_errors(doc, root, filename, {path for path, _ in found})
    errors = [d for _, d in found]
    # Semantic checks assume the schema's shapes, so they run only on the top-level sections
    # the schema found nothing wrong with; together, the operator sees every error at once.
    broken = {str(path[0]) for path, _ in found if path}
    checker = _Checker(doc, root, filename)
    config = checker.build(source, skip=broken)
    errors += checker.errors
    if errors or config is None:
        raise ConfigError(errors)
    unsupported = [
        Diagnostic(
            filename, *_position(root, path, at_key=path[-1] != "mode"), field_name(path), msg
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


# --------------------------------------------------------------------------- YAML


# A kubevipd config nests five levels deep and holds a few dozen values: far beyond these, a
# file is not a config, and YAML's aliases could make it expand without end (a "billion laughs").
_MAX_DEPTH = 100
_MAX_VALUES = 100_000
_TOO_DEEP = f"YAML: nested more than {_MAX_DEPTH} levels deep; a kubevipd config needs 5"


def _parse_yaml(text: str, filename: str) -> tuple[Any, list[Diagnostic]]:
    """The one document's root mapping, and what ruamel warned about (as one-line warnings)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError, YAMLWarning
    from ruamel.yaml.reader import ReaderError

    deep = _flow_too_deep(text)
    if deep is not None:  # before ruamel: its scanner takes seconds on a few KB of '[[[['
        line, col = _text_position(text, deep)
        raise ConfigError([Diagnostic(filename, line, col, "", _TOO_DEEP)])
    yaml = YAML(typ="rt")
    yaml.Constructor = _constructor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", YAMLWarning)
        try:
            docs = list(yaml.load_all(text))
        except MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = e.problem or e.context or "invalid YAML"
            dup = re.match(r'found duplicate key "(.*?)" with value', problem)
            if dup:
                problem = f'duplicate key "{dup.group(1)}" (each key may appear once)'
            elif e.context and e.problem:
                problem = f"{problem} ({e.context})"
            raise ConfigError(
                [Diagnostic(filename, line, col, "", f"YAML syntax: {problem}")]
            ) from None
        except ReaderError as e:
            line, col = _text_position(text, e.position)
            msg = f"{_describe_character(e.character)}, which YAML does not allow: remove it"
            raise ConfigError([Diagnostic(filename, line, col, "", msg)]) from None
        except RecursionError:
            line, col = _too_deep(text)
            raise ConfigError([Diagnostic(filename, line, col, "", _TOO_DEEP)]) from None
        except YAMLError as e:
            msg = f"YAML: {_one_line(' '.join(str(e).split()), 200)}"
            raise ConfigError([Diagnostic(filename, 1, 1, "", msg)]) from None
        except Exception as e:  # ruamel failing on odd input: %YAML 1.3 is a KeyError in it
            raise ConfigError([_unreadable(text, filename, e)]) from None
    notes = []
    for w in caught:
        if issubclass(w.category, YAMLWarning):
            notes.append(_yaml_warning(w.message, filename))
        else:  # not about the file: as if it had not been caught
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if len(docs) > 1:
        line, col = _node_start(text, document=1)
        msg = "holds several YAML documents ('---'); kubevipd reads exactly one"
        raise ConfigError([Diagnostic(filename, line, col, "", msg)])
    if not docs or docs[0] is None:
        msg = "the file is empty: it needs at least a vip section (see kubevip.yaml.example)"
        raise ConfigError([Diagnostic(filename, 1, 1, "", msg)])
    root = docs[0]
    if not isinstance(root, Mapping):
        line, col = _node_start(text, document=0)
        msg = f"expected a mapping of settings (key: value), got {_describe(root)}"
        raise ConfigError([Diagnostic(filename, line, col, "", msg)])
    return root, [n for n in notes if n is not None]


@cache
def _constructor() -> type:
    """ruamel's round-trip constructor, with a value it cannot build (``2020-13-45``, a 5000-digit
    number, ``!!bool maybe``) reported at its position instead of as a bare ValueError."""
    from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
    from ruamel.yaml.error import YAMLError

    class Constructor(RoundTripConstructor):
        def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
            try:
                return super().construct_non_recursive_object(node, tag)
            except (YAMLError, RecursionError):
                raise
            except Exception as e:
                problem = _unconstructable(tag or node.tag, e)
                raise ConstructorError(None, None, problem, node.start_mark) from None

    return Constructor


_TAG_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "null": "an empty value",
    "timestamp": "a date",
    "binary": "binary data",
}


def _unconstructable(tag: str, e: Exception) -> str:
    """Why a scalar could not be built; never its text, which may be a secret."""
    short = tag.removeprefix("tag:yaml.org,2002:")
    kind = _TAG_KINDS.get(short, "its tag")
    why = ""
    digits = re.search(r"limit \((\d+) digits\)", str(e))
    if digits:
        why = f": it has more than {digits.group(1)} digits"
    elif short == "timestamp" and isinstance(e, ValueError):
        why = f": {str(e).splitlines()[0]}"
    shown = f"!!{short}" if short != tag else tag
    return f"cannot read this value as {kind} ({shown}){why}; quote it if it is a string"


def _text_position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counted as ruamel counts them (a line ends at
    \\n, \\r\\n or \\r; a BOM takes no column)."""
    head = text[:index].replace("\r\n", "\n").replace("\r", "\n")
    last = head[head.rfind("\n") + 1 :]
    return head.count("\n") + 1, len(last) - last.count("\ufeff") + 1


def _describe_character(code: int | str) -> str:
    char = chr(code) if isinstance(code, int) else code
    category = unicodedata.category(char)
    what = {"Cc": "a control character", "Cs": "half of a UTF-16 surrogate pair"}.get(
        category, "a character"
    )
    return f"the file holds U+{ord(char):04X}, {what}"


def _events(text: str) -> Iterator[Any]:
    """ruamel's parse events: iterative, so they work where composing the tree recursed too
    deep. Only used on an error's path, to find a position."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        yield from YAML(typ="rt").parse(text)
    except (YAMLError, RecursionError):
        return


def _flow_too_deep(text: str) -> int | None:
    """The index of the first '[' or '{' nested deeper than _MAX_DEPTH, outside quotes and
    comments; None if there is none (the usual case, found without a scan)."""
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return None
    depth = 0
    quote = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t\r\n"):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return i
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _too_deep(text: str) -> tuple[int, int]:
    depth = 0
    for event in _events(text):
        name = type(event).__name__
        if name in ("MappingStartEvent", "SequenceStartEvent"):
            depth += 1
            if depth > _MAX_DEPTH:
                return event.start_mark.line + 1, event.start_mark.column + 1
        elif name in ("MappingEndEvent", "SequenceEndEvent"):
            depth -= 1
    return 1, 1


def _node_start(text: str, document: int) -> tuple[int, int]:
    """Where the ``document``-th document (0-based) starts: its '---' or its first node."""
    seen = -1
    for event in _events(text):
        if type(event).__name__ == "DocumentStartEvent":
            seen += 1
            if seen == document and getattr(event, "explicit", False):
                return event.start_mark.line + 1, event.start_mark.column + 1
        elif seen == document and type(event).__name__ != "DocumentEndEvent":
            return event.start_mark.line + 1, event.start_mark.column + 1
    return 1, 1


def _unreadable(text: str, filename: str, e: Exception) -> Diagnostic:
    directive = re.search(r"^%YAML[ \t]+(\S+)", text, flags=re.M)
    if directive and directive.group(1) not in ("1.1", "1.2"):
        line = text.count("\n", 0, directive.start()) + 1
        msg = (
            f"YAML syntax: %YAML {_one_line(directive.group(1))} is not a version kubevipd "
            "reads: write %YAML 1.2, or remove the line"
        )
        return Diagnostic(filename, line, 1, "", msg)
    return Diagnostic(filename, 1, 1, "", f"YAML: cannot be read ({type(e).__name__})")


def _yaml_warning(warning: Warning | str, filename: str) -> Diagnostic | None:
    """ruamel's warnings, which it prints on several lines, as one-line warnings."""
    text = str(warning)
    node = getattr(warning, "node", None)  # MantissaNoDotYAML1_1Warning
    if node is not None and getattr(node, "start_mark", None) is not None:
        mark = node.start_mark
        msg = (
            "YAML 1.1 wants a '.' in a number with an exponent (1.0e3, not 1e3); other YAML 1.1 "
            "readers take this value as a string"
        )
        return Diagnostic(filename, mark.line + 1, mark.column + 1, "", msg, "warning")
    anchor = re.search(
        r"found duplicate anchor '(.*?)'.*second occurrence.*?line (\d+), column (\d+)",
        text,
        flags=re.S,
    )
    if anchor:
        msg = (
            f"YAML: the anchor &{_one_line(anchor.group(1))} is defined again; the aliases after "
            "this use the new value"
        )
        return Diagnostic(filename, int(anchor.group(2)), int(anchor.group(3)), "", msg, "warning")
    first = next((line for line in text.splitlines() if line.strip()), "")
    return Diagnostic(filename, 1, 1, "", f"YAML: {_one_line(first)}", "warning") if first else None


def _one_line(text: str, limit: int = 80) -> str:
    """``text`` made safe for a one-line message: escaped, shortened."""
    shown = printable(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class _TooLarge(Exception):
    """A document that is no config: too many values, too deep, or an alias inside itself."""

    def __init__(self, path: FieldPath, message: str, top_level: bool = False) -> None:
        self.path = path  # where it was found (the position); top_level: name its section only
        self.message = message
        self.top_level = top_level


def _plain(root: Any) -> Any:
    """ruamel's round-trip objects as plain JSON-like values for jsonschema: a tree, aliases
    expanded, keys as strings. Dates and tagged values are left as they are (the schema
    rejects them)."""
    count = 0
    open_nodes: list[int] = []  # the containers being converted, outermost first
    path: list[PathItem] = []

    def plain(node: Any) -> Any:
        nonlocal count
        count += 1
        if count > _MAX_VALUES:
            msg = (
                f"holds more than {_MAX_VALUES} values (YAML aliases expanded); a kubevipd "
                "config holds a few dozen"
            )
            raise _TooLarge(tuple(path[:1]), msg)
        if not isinstance(node, Mapping | list):
            return _scalar(node)
        if id(node) in open_nodes:
            raise _TooLarge(tuple(path), "YAML: an alias (*) refers to a value that contains it")
        if len(open_nodes) >= _MAX_DEPTH:
            raise _TooLarge(tuple(path), _TOO_DEEP, top_level=True)
        open_nodes.append(id(node))
        try:
            if isinstance(node, list):
                return [item(i, v) for i, v in enumerate(node)]
            return {(name := _key_name(k)): item(name, v) for k, v in node.items()}
        finally:
            open_nodes.pop()

    def item(key: PathItem, value: Any) -> Any:
        path.append(key)
        try:
            return plain(value)
        finally:
            path.pop()

    return plain(root)


def _scalar(node: Any) -> Any:
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node  # dates and tagged values: left as they are, the schema rejects them


def _key_name(key: Any) -> str:
    """A mapping key as the schema sees it: ``null``, ``true`` or ``1`` as written."""
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


_MISSING = object()


def _find_key(node: Mapping[Any, Any], name: str) -> Any:
    """The key of ``node`` that the plain document calls ``name`` (``1`` for "1")."""
    if name in node:
        return name
    return next((k for k in node if not isinstance(k, str) and _key_name(k) == name), _MISSING)


def _position(root: Any, path: FieldPath, at_key: bool = False) -> tuple[int, int]:
    """1-based line and column of the value (or key) at ``path`` in the ruamel tree."""
    line, col = 0, 0
    node = root
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, Mapping) and isinstance(key, str):
            orig = _find_key(node, key)
            if orig is _MISSING:
                break
            pos = _key_position(node, orig, (last and at_key) or node[orig] is None)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            lc = getattr(node, "lc", None)
            pos = lc.item(key) if lc is not None else None
        else:
            break
        if pos is None:
            break
        line, col = pos
        node = node[orig] if isinstance(node, Mapping) else node[key]
    return line + 1, col + 1


def _key_position(node: Mapping[Any, Any], key: Any, at_key: bool) -> tuple[int, int] | None:
    """(line, column) of a key or its value, 0-based; a key merged in with ``<<: *anchor`` is
    found where the anchored mapping sets it."""
    # ruamel 0.17/0.18 keep (index, mapping) pairs in ``merge``; 0.19 the mappings themselves.
    merged = [m[1] if isinstance(m, tuple) else m for m in getattr(node, "merge", ())]
    sources = [node, *merged]
    for source in sources:
        data = getattr(getattr(source, "lc", None), "data", None)
        if isinstance(data, Mapping) and key in data:
            lc = source.lc
            pos = lc.key(key) if at_key else lc.value(key)
            return cast(tuple[int, int], tuple(pos))
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "an empty value"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, Set):
        return "a set"
    tag = getattr(getattr(value, "tag", None), "value", None)  # ruamel's TaggedScalar
    if isinstance(tag, str):
        return f"a value tagged {_one_line(tag, 40)}"
    name = type(value).__name__
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


# --------------------------------------------------------------------------- schema


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(schema(), format_checker=FormatChecker())


def _schema_errors(doc: Any, root: Any, filename: str) -> Iterator[tuple[FieldPath, Diagnostic]]:
    mistyped: set[FieldPath] = set()
    for err in _validator().iter_errors(doc):
        path: FieldPath = tuple(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                kpath = (*path, key)
                msg = f"unknown key{_did_you_mean(key, allowed)}"
                line, col = _position(root, kpath, at_key=True)
                yield kpath, Diagnostic(filename, line, col, field_name(kpath), msg)
            continue
        if err.validator == "required":
            missing = [k for k in err.validator_value if k not in err.instance]
            line, col = _position(root, path, at_key=True) if path else (1, 1)
            for key in missing:
                desc = err.schema.get("properties", {}).get(key, {}).get("description", "")
                hint = f" ({desc.rstrip('.')})" if desc else ""
                kpath = (*path, key)
                yield (
                    kpath,
                    Diagnostic(filename, line, col, field_name(kpath), f"is required{hint}"),
                )
            continue
        if path in mistyped:
            continue  # `port: .inf` is not a whole number: "nor at most 65535" adds nothing
        if err.validator == "type":
            mistyped.add(path)
        line, col = _position(root, path)
        yield path, Diagnostic(filename, line, col, field_name(path), _message(err, path))


def _text_errors(
    doc: Any, root: Any, filename: str, reported: set[FieldPath]
) -> list[tuple[FieldPath, Diagnostic]]:
    """A control character in a value that the schema let through (an interface name, a path,
    a URL): no setting takes one, and it would break the logs or the kernel's view of the name.
    YAML lets a double-quoted string carry one as an escape (``"eth0\\0"``)."""
    out: list[tuple[FieldPath, Diagnostic]] = []
    stack: list[tuple[FieldPath, Any]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        if any(path[: len(r)] == r for r in reported):
            continue
        if isinstance(value, Mapping):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and not value.isprintable():
            bad = next((c for c in value if _is_control(c)), None)
            if bad is not None:
                line, col = _position(root, path)
                what = _describe_character(bad).removeprefix("the file holds ")
                msg = f"contains {what}, which no setting takes"
                out.append((path, Diagnostic(filename, line, col, field_name(path), msg)))
    return out


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs")


def _message(err: Any, path: FieldPath) -> str:
    secret = bool(path) and path[-1] in SECRET_KEYS
    custom = err.schema.get("x-error") if isinstance(err.schema, Mapping) else None
    if err.validator == "type":
        want = err.validator_value
        wants = [want] if isinstance(want, str) else list(want)
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in wants)
        return f"must be {names}, not {_describe(err.instance)}"
    if custom:
        return str(custom)
    if err.validator == "enum":
        options = [str(o) for o in err.validator_value]
        got = "" if secret else f" (got {json.dumps(err.instance)})"
        hint = _did_you_mean(str(err.instance), options) if isinstance(err.instance, str) else ""
        return f"must be one of {', '.join(options)}{got}{hint}"
    if err.validator in ("minimum", "exclusiveMinimum"):
        return f"must be at least {err.validator_value}" + (
            "" if err.validator == "minimum" else " (exclusive)"
        )
    if err.validator == "maximum":
        return f"must be at most {err.validator_value}"
    if err.validator == "minItems":
        return f"needs at least {err.validator_value} item(s)"
    if err.validator == "maxItems":
        return f"takes at most {err.validator_value} item(s)"
    if err.validator == "minLength":
        return "must not be empty"
    if err.validator == "format":
        fmt = {"ipv4": "an IPv4 address", "ipv6": "an IPv6 address"}
        return f"must be {fmt.get(err.validator_value, err.validator_value)}"
    if err.validator == "pattern":
        return "has an invalid form"
    return "is invalid" if secret else str(err.message)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- semantics


class _Checker:
    """Rules a JSON Schema cannot state well, then conversion to the model."""

    def __init__(self, doc: Mapping[str, Any], root: Any, filename: str) -> None:
        self.doc = doc
        self.root = root
        self.filename = filename
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: FieldPath, message: str, at_key: bool = False) -> None:
        line, col = _position(self.root, path, at_key)
        self.errors.append(Diagnostic(self.filename, line, col, field_name(path), message))

    def warn(self, path: FieldPath, message: str) -> None:
        line, col = _position(self.root, path, at_key=True)
        self.warnings.append(
            Diagnostic(self.filename, line, col, field_name(path), message, "warning")
        )

    def build(self, source: Path | None, skip: set[str]) -> Config | None:
        """The Config, or None when anything is wrong; sections in ``skip`` are not checked."""
        if skip:
            # Still check the sound sections, so every error is reported in one run.
            sound_vip = self._vip(self.doc["vip"]) if "vip" not in skip else None
            if "election" not in skip:
                self._election(self.doc.get("election", {}), sound_vip)
            if "announce" not in skip:
                self._announce(self.doc.get("announce", {"mode": "arp"}), None)
            if "metrics" not in skip:
                self._metrics(self.doc.get("metrics"))
            if "health" not in skip:
                self._health(self.doc.get("health", {}), sound_vip)
            return None
        vip = self._vip(self.doc["vip"])
        election = self._election(self.doc.get("election", {}), vip)
        announce = self._announce(self.doc.get("announce", {"mode": "arp"}), vip)
        metrics = self._metrics(self.doc.get("metrics"))
        health = self._health(self.doc.get("health", {}), vip)
        if self.errors or vip is None or election is None or announce is None or health is None:
            return None
        return Config(
            vip=vip,
            node_name=self.doc.get("node_name"),
            interface=self.doc.get("interface"),
            election=election,
            announce=announce,
            health=health,
            metrics=metrics,
            log_level=self.doc.get("log", {}).get("level", "info"),
            source=source,
        )

    # vip ------------------------------------------------------------------

    def _vip(self, v: Mapping[str, Any]) -> VipSpec | None:
        sources = [k for k in ("address", "dns", "dhcp") if k in v]
        if not sources:
            self.error(("vip",), "needs exactly one of address, dns or dhcp", at_key=True)
            return None
        if len(sources) > 1:
            for extra in sources[1:]:
                self.error(
                    ("vip", extra),
                    f"conflicts with vip.{sources[0]}: set only one of address, dns or dhcp",
                    at_key=True,
                )
            return None
        port = int(v.get("port", 6443))
        prefix = v.get("prefix_length")
        # int(): the schema takes 24.0 as an integer, which the model must not carry as a float.
        prefixes = (
            tuple(int(p) for p in prefix)
            if isinstance(prefix, list)
            else ((int(prefix),) if prefix is not None else None)
        )
        if "address" in v:
            addresses = self._addresses(v["address"])
            if addresses is None:
                return None
            prefixes = self._prefixes(prefixes, tuple(a.version for a in addresses))
            return VipSpec(addresses=addresses, prefix_lengths=prefixes, port=port)
        if "dns" in v:
            d = v["dns"]
            family = d.get("family", "first")
            refresh = self._duration(("vip", "dns", "refresh"), d.get("refresh", "3s"))
            if prefixes is not None:
                if family == "first":
                    self.error(
                        ("vip", "prefix_length"),
                        "dns family 'first' may resolve to either "
                        "family: set vip.dns.family to ipv4, ipv6 or dual to give a prefix "
                        "length",
                    )
                    return None
                versions = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[family]
                prefixes = self._prefixes(prefixes, versions)
            dns = DnsSource(name=d["name"], family=family, refresh=refresh or Duration(3000))
            return VipSpec(dns=dns, prefix_lengths=prefixes, port=port)
        h = v["dhcp"]
        if prefixes is not None:
            prefixes = self._prefixes(prefixes, (4,))
        dhcp = DhcpSource(hostname=h["hostname"], family=h.get("family", "ipv4"))
        return VipSpec(dhcp=dhcp, prefix_lengths=prefixes, port=port)

    def _addresses(self, raw: str | list[str]) -> tuple[IPAddress, ...] | None:
        items = raw if isinstance(raw, list) else [raw]
        base: FieldPath = ("vip", "address")
        out: list[IPAddress] = []
        for i, text in enumerate(items):
            path = (*base, i) if isinstance(raw, list) else base
            addr = ipaddress.ip_address(text)
            bad = unusable_reason(addr)
            if bad:
                self.error(path, f"{addr} is {bad} and cannot be a virtual IP")
                return None
            out.append(addr)
        if len(out) == 2 and out[0].version == out[1].version:
            self.error(
                base,
                "a dual-stack VIP needs one IPv4 and one IPv6 address, "
                f"not two IPv{out[0].version} addresses",
            )
            return None
        return tuple(out)

    def _prefixes(
        self, given: tuple[int, ...] | None, versions: tuple[int, ...]
    ) -> tuple[int, ...]:
        path: FieldPath = ("vip", "prefix_length")
        if given is None:
            return tuple(32 if ver == 4 else 128 for ver in versions)
        if len(given) != len(versions):
            self.error(
                path,
                f"gives {len(given)} prefix length(s) for {len(versions)} "
                "address(es): give one per address, in the same order",
            )
            return given
        for i, (plen, ver) in enumerate(zip(given, versions, strict=True)):
            top = 32 if ver == 4 else 128
            if plen > top:
                where = (
                    (*path, i)
                    if len(given) > 1 or isinstance(self.doc["vip"]["prefix_length"], list)
                    else path
                )
                self.error(where, f"{plen} does not fit IPv{ver} (0 to {top})")
        return given

    # election -------------------------------------------------------------

    def _election(self, e: Mapping[str, Any], vip: VipSpec | None) -> ElectionSpec | None:
        base = ElectionSpec()
        lease = self._duration(("election", "lease_duration"), e.get("lease_duration"))
        renew = self._duration(("election", "renew_deadline"), e.get("renew_deadline"))
        retry = self._duration(("election", "retry_period"), e.get("retry_period"))
        lease = lease or base.lease_duration
        renew = renew or base.renew_deadline
        retry = retry or base.retry_period
        ok = True
        if lease <= renew:
            where = "renew_deadline" if "renew_deadline" in e else "lease_duration"
            self.error(
                ("election", where),
                f"lease_duration ({lease}) must be longer than "
                f"renew_deadline ({renew}), or two nodes could both believe they lead",
            )
            ok = False
        if renew <= retry * _CLIENT_GO_JITTER:
            where = "retry_period" if "retry_period" in e else "renew_deadline"
            self.error(
                ("election", where),
                f"renew_deadline ({renew}) must be longer than "
                f"1.2 x retry_period ({retry}), as client-go requires",
            )
            ok = False
        if "server" in e and vip is not None and not self._server_is_not_the_vip(e["server"], vip):
            ok = False
        if not ok:
            return None
        return ElectionSpec(
            backend=e.get("backend", "kubernetes"),
            kubeconfig=Path(e.get("kubeconfig", str(base.kubeconfig))),
            server=e.get("server"),
            namespace=e.get("namespace", base.namespace),
            lease_name=e.get("lease_name", base.lease_name),
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
        )

    def _server_is_not_the_vip(self, server: str, vip: VipSpec) -> bool:
        """False, with the error, when election.server's host is the VIP itself.

        Nobody holds the VIP at bootstrap, nor between a leader's crash and the next takeover:
        an election that goes through it could never elect anyone then.
        """
        try:
            parts = urlsplit(server)
            host = parts.hostname or ""
        except ValueError as e:  # e.g. an unclosed '[' the schema's pattern lets through
            self.error(
                ("election", "server"), f"must be a URL such as https://127.0.0.1:6443 ({e})"
            )
            return False
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # never a userinfo password
        what = _vip_named_by(host, vip)
        if what is None:
            if parts.username is None and parts.password is None:
                return True
            self.error(
                ("election", "server"),
                f"{shown} must not carry a user or password (user:password@): the credentials "
                "come from election.kubeconfig, and the URL is printed in logs",
            )
            return False
        self.error(
            ("election", "server"),
            f"{shown} is {what}, which nobody holds at bootstrap or after a crash: the "
            "election must reach this node's own apiserver; remove election.server "
            f"(default {default_election_server(vip.port)}) or name a local address",
        )
        return False

    def _duration(self, path: FieldPath, raw: str | float | None) -> Duration | None:
        if raw is None:
            return None
        try:
            return Duration.parse(raw)
        except ValueError as e:
            self.error(path, str(e))
            return None

    # announce -------------------------------------------------------------

    def _announce(self, a: Mapping[str, Any], vip: VipSpec | None) -> AnnounceSpec | None:
        mode = a["mode"]
        for other in ("arp", "bgp", "metal"):
            if other != mode and other in a:
                self.error(
                    ("announce", other),
                    f"is set, but announce.mode is {mode}: remove "
                    f"this section or set mode: {other}",
                    at_key=True,
                )
        if mode == "arp":
            refresh = self._duration(
                ("announce", "arp", "refresh"), a.get("arp", {}).get("refresh")
            )
            return AnnounceSpec(mode="arp", arp=ArpSpec(refresh or Duration(3000)))
        if mode not in a:
            self.error(("announce",), f"mode {mode} needs an announce.{mode} section", at_key=True)
            return None
        if mode == "bgp":
            bgp = self._bgp(a["bgp"])
            return AnnounceSpec(mode="bgp", arp=None, bgp=bgp) if bgp else None
        metal = self._metal(a["metal"], vip)
        return AnnounceSpec(mode="metal", arp=None, metal=metal) if metal else None

    def _bgp(self, b: Mapping[str, Any]) -> BgpSpec | None:
        base: FieldPath = ("announce", "bgp")
        peers: list[BgpPeer] = []
        if not b["peers"]:
            self.error((*base, "peers"), "the peer list is empty: give at least one BGP peer")
            return None
        seen: set[IPAddress] = set()
        for i, p in enumerate(b["peers"]):
            ppath = (*base, "peers", i)
            addr = ipaddress.ip_address(p["address"])
            if addr in seen:
                self.error((*ppath, "address"), f"peer {addr} is listed twice")
            seen.add(addr)
            secret = self._secret(ppath, p, "password", required=False)
            peers.append(BgpPeer(addr, int(p["as"]), bool(p.get("multihop", False)), secret))
        router_id = ipaddress.IPv4Address(b["router_id"])
        if router_id.is_unspecified:
            self.error(
                (*base, "router_id"), "0.0.0.0 is not a BGP router ID: use this node's IPv4 address"
            )
        return BgpSpec(router_id, int(b["local_as"]), tuple(peers))

    def _metal(self, m: Mapping[str, Any], vip: VipSpec | None) -> MetalSpec | None:
        base: FieldPath = ("announce", "metal")
        if vip is not None and not vip.addresses:
            self.error(
                ("vip",),
                "announce mode metal moves an Elastic IP: set vip.address to "
                "it (dns and dhcp cannot be used with metal)",
                at_key=True,
            )
        token = self._secret(base, m, "token", required=True)
        if token is None:
            return None
        return MetalSpec(project_id=m["project_id"].lower(), token=token)

    def _secret(
        self, base: FieldPath, section: Mapping[str, Any], name: str, required: bool
    ) -> SecretRef | None:
        keys = {f"{name}_file": "file", f"{name}_credential": "credential", name: "inline"}
        given = [k for k in keys if k in section]
        if len(given) > 1:
            for extra in given[1:]:
                self.error(
                    (*base, extra),
                    f"conflicts with {given[0]}: give the {name} one way only",
                    at_key=True,
                )
            return None
        if not given:
            if required:
                self.error(
                    base,
                    f"needs {name}_file or {name}_credential (the {name} is never "
                    "read from anywhere else)",
                    at_key=True,
                )
            return None
        key = given[0]
        if keys[key] == "inline":
            self.warn(
                (*base, key),
                f"inline {name} in the config file: move it to {name}_file "
                f"(mode 0600) or a systemd credential ({name}_credential)",
            )
        return SecretRef(kind=keys[key], value=section[key])  # type: ignore[arg-type]

    # health ---------------------------------------------------------------

    def _health(self, h: Mapping[str, Any], vip: VipSpec | None) -> HealthSpec | None:
        base = HealthSpec()
        period = self._duration(("health", "period"), h.get("period")) or base.period
        timeout = self._duration(("health", "timeout"), h.get("timeout")) or base.timeout
        grace = self._duration(("health", "link_down_grace"), h.get("link_down_grace"))
        if timeout > period:
            where = "timeout" if "timeout" in h else "period"
            self.error(
                ("health", where),
                f"timeout ({timeout}) must not be longer than period ({period}), "
                "or checks would pile up",
            )
            return None
        url = h.get("url")
        if url is not None and vip is not None:
            try:
                what = _vip_named_by(urlsplit(url).hostname or "", vip)
            except ValueError:
                what = None  # the schema's URL pattern reports it
            if what is not None:
                self.error(
                    ("health", "url"),
                    f"names {what}: the health gate must check this node's own apiserver, not "
                    f"whichever node holds the VIP; remove health.url (default "
                    f"{default_health_url(vip.port)})",
                )
                return None
        return HealthSpec(
            enabled=h.get("enabled", base.enabled),
            url=h.get("url", default_health_url(vip.port if vip else VipSpec().port)),
            ca_file=Path(h["ca_file"]) if "ca_file" in h else None,
            tls_server_name=h.get("tls_server_name"),
            period=period,
            timeout=timeout,
            failure_threshold=int(h.get("failure_threshold", base.failure_threshold)),
            success_threshold=int(h.get("success_threshold", base.success_threshold)),
            link_down_grace=grace or base.link_down_grace,
        )

    # metrics --------------------------------------------------------------

    def _metrics(self, m: Mapping[str, Any] | None) -> MetricsSpec | None:
        if m is None:
            return None
        listen = m["listen"]
        host, _, port = listen.rpartition(":")
        if not 1 <= int(port) <= 65535:
            self.error(("metrics", "listen"), f"port {port} is out of range (1 to 65535)")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                self.error(("metrics", "listen"), f"{host} is not an IPv6 address")
        return MetricsSpec(listen=listen)


def _vip_named_by(host: str, vip: VipSpec) -> str | None:
    """How ``host`` (a URL's host name, without brackets) names the VIP, or None if it does not."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        names = []
        if vip.dns is not None:
            names.append((vip.dns.name, "vip.dns.name"))
        if vip.dhcp is not None:
            names.append((vip.dhcp.hostname, "vip.dhcp.hostname"))
        for vip_name, label in names:
            if host.rstrip(".").lower() == vip_name.rstrip(".").lower():
                return f"the VIP's DNS name ({label})"
        return None
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    for vip_addr in vip.addresses:
        if addr == vip_addr or mapped == vip_addr:
            return "the VIP"
    return None


def unusable_reason(addr: IPAddress) -> str | None:
    """Why ``addr`` cannot be a virtual IP, or None when it can."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_link_local:
        return "a link-local address"
    return None
