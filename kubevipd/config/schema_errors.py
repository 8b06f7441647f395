"""Validate the plain document against the shipped JSON Schema, as one-line diagnostics.

Each jsonschema error becomes a Diagnostic at its file:line:column naming the field: unknown keys
with a did-you-mean, missing keys with their description, types in words, a schema's own
x-error, and never a secret's value. Also the control characters in values the schema lets
through.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, cast

from kubevipd.config.errors import Diagnostic
from kubevipd.config.yaml_source import describe, describe_character
from kubevipd.config.yaml_tree import FieldPath, field_name, position

# Keys whose values are secrets: never echoed in any message.
SECRET_KEYS = frozenset({"password", "token"})
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package."""
    text = resources.files("kubevipd.config").joinpath("schema.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(schema(), format_checker=FormatChecker())


def schema_errors(doc: Any, root: Any, filename: str) -> Iterator[tuple[FieldPath, Diagnostic]]:
    mistyped: set[FieldPath] = set()
    for err in _validator().iter_errors(doc):
        path: FieldPath = tuple(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                kpath = (*path, key)
                msg = f"unknown key{_did_you_mean(key, allowed)}"
                line, col = position(root, kpath, at_key=True)
                yield kpath, Diagnostic(filename, line, col, field_name(kpath), msg)
            continue
        if err.validator == "required":
            missing = [k for k in err.validator_value if k not in err.instance]
            line, col = position(root, path, at_key=True) if path else (1, 1)
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
        line, col = position(root, path)
        yield path, Diagnostic(filename, line, col, field_name(path), _message(err, path))


def text_errors(
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
                line, col = position(root, path)
                what = describe_character(bad).removeprefix("the file holds ")
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
        return f"must be {names}, not {describe(err.instance)}"
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
