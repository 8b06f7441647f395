"""Read the YAML text: ruamel's round-trip tree of the one document, with positions kept.

Everything that can go wrong before there is a tree is reported here, at its line and column, as
a ConfigError: syntax, control characters YAML does not allow, nesting past the depth limit (found
before ruamel, whose scanner is slow on it), values ruamel cannot build, several documents or
none. ruamel's warnings become one-line warnings. Also how a value's kind is named in messages.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Set
from functools import cache
from typing import Any

from kubevipd.config.errors import ConfigError, Diagnostic, printable

# A kubevipd config nests five levels deep and holds a few dozen values: far beyond these, a
# file is not a config, and YAML's aliases could make it expand without end (a "billion laughs").
MAX_DEPTH = 100
MAX_VALUES = 100_000
TOO_DEEP = f"YAML: nested more than {MAX_DEPTH} levels deep; a kubevipd config needs 5"


def parse_yaml(text: str, filename: str) -> tuple[Any, list[Diagnostic]]:
    """The one document's root mapping, and what ruamel warned about (as one-line warnings)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError, YAMLWarning
    from ruamel.yaml.reader import ReaderError

    deep = _flow_too_deep(text)
    if deep is not None:  # before ruamel: its scanner takes seconds on a few KB of '[[[['
        line, col = _text_position(text, deep)
        raise ConfigError([Diagnostic(filename, line, col, "", TOO_DEEP)])
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
            msg = f"{describe_character(e.character)}, which YAML does not allow: remove it"
            raise ConfigError([Diagnostic(filename, line, col, "", msg)]) from None
        except RecursionError:
            line, col = _too_deep(text)
            raise ConfigError([Diagnostic(filename, line, col, "", TOO_DEEP)]) from None
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
        msg = f"expected a mapping of settings (key: value), got {describe(root)}"
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


def describe_character(code: int | str) -> str:
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
    """The index of the first '[' or '{' nested deeper than MAX_DEPTH, outside quotes and
    comments; None if there is none (the usual case, found without a scan)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
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
            if depth > MAX_DEPTH:
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
            if depth > MAX_DEPTH:
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


def describe(value: Any) -> str:
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
