"""Config fuzzing: whatever a file holds, kubevipd gives a Config or one line per error.

Random bytes, random YAML documents and mutations of every valid config go through the loader
and through `kubevipd check-config`. The property: a loaded Config, or a ConfigError whose every
diagnostic is one printable line naming the file, at a line of the file (column >= 1); never
another exception, never a traceback, exit status 0 or 2. Derandomized: every run tries the
same examples, so a failure is reproducible and the suite stays deterministic.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_valid import VALID_TEXTS, example_variants  # tests/unit is on sys.path

from kubevipd.cli import main
from kubevipd.config import Config, ConfigError, Diagnostic, load, load_text
from kubevipd.config.loader import cannot_run

# KUBEVIPD_FUZZ_SCALE=20 tries twenty times as many examples (by hand, not in the suite).
SCALE = int(os.environ.get("KUBEVIPD_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=examples * SCALE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


VALID = {**{f"example {k}": v for k, v in example_variants().items()}, **VALID_TEXTS}
KUBEVIPD = Path(sys.executable).parent / "kubevipd"


# --------------------------------------------------------------------------- the property


def max_line(data: bytes) -> int:
    """The last line a diagnostic may name: one past the last line break (the end of the
    file), counting every break an editor or YAML could count."""
    return len(data.decode("utf-8", "replace").splitlines()) + 1


def assert_one_line(d: Diagnostic, filename: str, last_line: int) -> None:
    text = str(d)
    assert "\n" not in text and "\r" not in text and text.isprintable(), repr(text)
    assert d.file == filename and text.startswith(f"{filename}:"), text
    assert d.line is not None and 1 <= d.line <= last_line, text
    assert d.column is not None and d.column >= 1, text
    assert d.message.strip(), text
    if d.field:
        assert f" {d.field}: " in text or text.endswith(f" {d.field}:"), text


def check_loads_or_one_line_per_error(data: bytes) -> Config | None:
    """load() the bytes from a file; returns the Config, or None after checking the errors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubevip.yaml"
        path.write_bytes(data)
        filename = str(path)
        try:
            loaded = load(path)
        except ConfigError as e:
            assert e.diagnostics, "a ConfigError without a diagnostic"
            for d in e.diagnostics:
                assert_one_line(d, filename, max_line(data))
            return None
    assert isinstance(loaded.config, Config)
    for d in (*loaded.warnings, *cannot_run(loaded)):
        assert_one_line(d, filename, max_line(data))
    return loaded.config


def check_text(text: str) -> Config | None:
    """The text through load_text (lone surrogates included) and, as bytes, through load()."""
    try:
        load_text(text, "kubevip.yaml")
    except ConfigError as e:
        for d in e.diagnostics:
            assert_one_line(d, "kubevip.yaml", max_line(text.encode("utf-8", "surrogatepass")))
    return check_loads_or_one_line_per_error(text.encode("utf-8", "surrogatepass"))


def check_config_cli(data: bytes) -> None:
    """`kubevipd check-config PATH`, in process: exit 0 with only 'PATH: ok', or exit 2 with one
    diagnostic line per error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubevip.yaml"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["check-config", str(path)])
    assert rc in (0, 2)
    lines = err.getvalue().splitlines()
    assert "Traceback" not in err.getvalue()
    assert all(line.startswith(f"{path}:") and line.isprintable() for line in lines), lines
    if rc == 0:
        assert out.getvalue() == f"{path}: ok\n"
        assert all(": warning: " in line for line in lines), lines
    else:
        assert out.getvalue() == "" and any(": warning: " not in line for line in lines)


# --------------------------------------------------------------------------- strategies

# Strings YAML or kubevipd read as something else: numbers too large, NaN, dates, booleans,
# durations, addresses, URLs, control characters.
NASTY = [
    "none",
    "kubernetes",
    "ipv6-unicast",
    "[ipv4-unicast, ipv4-unicast]",
    "256",
    "1.0e+308",
    "1e400",
    "-1e308",
    ".inf",
    "-.inf",
    ".nan",
    ".NaN",
    "nan",
    "NaN",
    "0x1F",
    "0o17",
    "1_000",
    "9" * 4400,  # past Python's 4300-digit limit of int()
    "9" * 400 + "s",
    "99999999999999999999h",
    "0.0001s",
    "1:20",
    "2024-13-01",
    "2024-02-30 25:61:61",
    "~",
    "null",
    "yes",
    "on",
    "!!bool maybe",
    "!!int abc",
    "!!float x",
    "!!binary '@@'",
    "!!timestamp x",
    "!!str {a: 1}",
    "!foo bar",
    "*undefined",
    "&a [*a]",
    "'unclosed",
    '"\\x00"',
    '"\\ud800"',
    '"a\\nb"',
    '"\\u202e"',
    "[",
    "{",
    "- a",
    "?",
    "|\n  block",
    "192.168.0.300",
    "fd00::1%eth0",
    "https://[::1:6443",
    "https://user:pw@127.0.0.1:6443",
    "[::1]:99999",
    "5s",
    "0s",
    "-1s",
    "",
    "x" * 2000,
]
SCHEMA_KEYS = [
    "vip",
    "address",
    "prefix_length",
    "port",
    "dns",
    "dhcp",
    "name",
    "hostname",
    "family",
    "refresh",
    "node_name",
    "interface",
    "election",
    "backend",
    "kubeconfig",
    "server",
    "namespace",
    "lease_name",
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "announce",
    "mode",
    "arp",
    "bgp",
    "metal",
    "router_id",
    "router_interface",
    "local_as",
    "source_address",
    "source_interface",
    "hold_time",
    "keepalive",
    "peers",
    "as",
    "multihop",
    "families",
    "password",
    "password_file",
    "password_credential",
    "project_id",
    "token",
    "token_file",
    "token_credential",
    "health",
    "enabled",
    "url",
    "ca_file",
    "tls_server_name",
    "period",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "link_down_grace",
    "metrics",
    "listen",
    "log",
    "level",
    "<<",
]
TOP_KEYS = ["vip", "node_name", "interface", "election", "announce", "health", "metrics", "log"]

# Every character, lone surrogates and control characters included.
any_text = st.text(st.characters(blacklist_categories=()), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=-(10**1000), max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY),
    any_text,
    st.text(min_size=1, max_size=10).map(lambda s: s * 300),  # very long (NASTY has longer)
)
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), any_text, st.integers(), st.none(), st.booleans())
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
top_level = st.dictionaries(st.sampled_from(TOP_KEYS) | keys, documents, max_size=6)


def to_yaml(doc: Any, flow: bool) -> str | None:
    """The document as YAML text: ruamel's block or flow style; None if it cannot write it."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = flow
    stream = io.StringIO()
    try:
        yaml.dump(doc, stream)
    except Exception:
        return None  # e.g. a string ruamel cannot emit: not what is under test
    return stream.getvalue()


def nested(depth: int, kind: str) -> str:
    if kind == "flow list":
        return "vip: {address: 192.168.0.75}\ninterface: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow map":
        return "vip: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if kind == "block list":
        return "vip: {address: 192.168.0.75}\ninterface:\n  " + "- " * depth + "x\n"
    depth = min(depth, 300)  # the text grows with the square of the depth
    return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "x\n"


# --------------------------------------------------------------------------- mutations

CONTROL = [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B)] + ["\ufeff", "\u2028", "\ud800"]


def _value_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]


@st.composite
def mutations(draw: st.DrawFn, text: str) -> str:
    """1 to 3 edits of ``text``: a value replaced by a random scalar, a key (line) deleted or
    duplicated, a control character inserted, the text truncated, random text inserted."""
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True) or [""]
        edit = draw(
            st.sampled_from(["replace", "delete", "duplicate", "control", "truncate", "insert"])
        )
        if edit == "replace" and _value_lines(lines):
            i = draw(st.sampled_from(_value_lines(lines)))
            head, _, _ = lines[i].partition(":")
            new = draw(st.one_of(st.sampled_from(NASTY), scalars.map(_flow_scalar)))
            lines[i] = f"{head}: {new}\n"
        elif edit == "delete":
            del lines[draw(st.integers(0, len(lines) - 1))]
        elif edit == "duplicate":
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif edit == "control":
            at = draw(st.integers(0, len(text)))
            char = draw(st.sampled_from(CONTROL))
            text = text[:at] + char + text[at:]
            continue
        elif edit == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
            continue
        elif edit == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(max_size=20)) + text[at:]
            continue
        text = "".join(lines)
    return text


def _flow_scalar(value: Any) -> str:
    """A scalar as YAML flow text (JSON is YAML 1.2); NaN and infinities as YAML writes them."""
    if isinstance(value, float) and value != value:
        return ".nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    try:
        return json.dumps(value)
    except ValueError:  # an integer beyond Python's int-to-str limit: not what is under test
        return "0"


# --------------------------------------------------------------------------- (a) random bytes


@fuzz(200)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check_loads_or_one_line_per_error(data)


@fuzz(200)
@given(st.sampled_from(sorted(VALID)), st.binary(min_size=1, max_size=40), st.data())
def test_random_bytes_inside_a_valid_config(name: str, junk: bytes, data: st.DataObject) -> None:
    raw = VALID[name].encode()
    at = data.draw(st.integers(0, len(raw)))
    check_loads_or_one_line_per_error(raw[:at] + junk + raw[at:])


@fuzz(200)
@given(st.text(st.characters(blacklist_categories=()), max_size=300))
def test_random_text(text: str) -> None:
    check_text(text)


# --------------------------------------------------------------------------- (b) random YAML


@fuzz(150)
@given(top_level, st.booleans())
def test_random_yaml_documents(doc: dict[Any, Any], flow: bool) -> None:
    text = to_yaml(doc, flow)
    if text is not None:
        check_text(text)


@fuzz(150)
@given(
    st.fixed_dictionaries(
        {"vip": st.fixed_dictionaries({"address": st.just("192.168.0.75")})},
        optional={k: documents for k in TOP_KEYS[1:]},
    ),
    st.booleans(),
)
def test_random_yaml_documents_with_a_valid_vip(doc: dict[str, Any], flow: bool) -> None:
    """Past the vip section, so every other section's checks see random values."""
    text = to_yaml(doc, flow)
    if text is not None:
        check_text(text)


@fuzz(100)
@given(top_level)
def test_random_json_documents(doc: dict[Any, Any]) -> None:
    try:
        text = json.dumps(doc)  # NaN and Infinity are strings to YAML
    except (TypeError, ValueError):
        return  # a key JSON cannot write, or an int beyond the str limit
    check_text(text)


@fuzz(40)
@given(
    st.sampled_from([99, 100, 101, 150, 300, 1000]) | st.integers(1, 400),
    st.sampled_from(["flow list", "flow map", "block list", "block map"]),
)
def test_deep_nesting(depth: int, kind: str) -> None:
    check_text(nested(depth, kind))


# --------------------------------------------------------------------------- (c) mutations


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_valid_config_loads_before_it_is_mutated(name: str) -> None:
    assert check_text(VALID[name]) is not None


@fuzz(500)
@given(st.sampled_from(sorted(VALID)).flatmap(lambda name: mutations(VALID[name])))
def test_mutations_of_every_valid_config(text: str) -> None:
    check_text(text)


# --------------------------------------------------------------------------- the command line


def _cli_inputs() -> Iterator[st.SearchStrategy[bytes]]:
    yield st.binary(max_size=300)
    yield (
        st.sampled_from(sorted(VALID))
        .flatmap(lambda n: mutations(VALID[n]))
        .map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
    yield top_level.map(lambda d: to_yaml(d, False) or "").map(
        lambda t: t.encode("utf-8", "surrogatepass")
    )


@fuzz(200)
@given(st.one_of(*_cli_inputs()))
def test_check_config_exits_0_or_2_with_one_line_per_error(data: bytes) -> None:
    check_config_cli(data)


CLI_CASES: dict[str, Callable[[], bytes]] = {
    "retry_period 1.0e+308": lambda: (
        VALID["minimal"].encode() + b"election: {retry_period: 1.0e+308}\n"
    ),
    "a NUL": lambda: b"vip: {address: 192.168.0.75}\ninterface: et\x00h0\n",
    "an escape sequence": lambda: b"vip: {address: 192.168.0.75}\n\x1b[31m\n",
    "a newline in a key": lambda: b'vip: {address: 192.168.0.75, "a\\nb": 1}\n',
    "a lone surrogate": lambda: b'vip: {address: 192.168.0.75}\n"\\ud800": 1\n',
    "a bad date": lambda: b"vip: {address: 192.168.0.75}\nnode_name: 2024-13-01\n",
    "%YAML 1.3": lambda: b"%YAML 1.3\n---\nvip: {address: 192.168.0.75}\n",
    "latin-1": lambda: b"vip:\n  address: \xe9\n",
    "a reused anchor": lambda: b"vip: {address: 192.168.0.75}\nlog: &a {level: info}\nx: &a 1\n",
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_the_installed_script_gives_one_line_per_error(tmp_path: Path, name: str) -> None:
    """The real `kubevipd check-config`, in a subprocess: no traceback, no warning of ruamel's
    on several lines; exit 2, every line in the compiler format."""
    path = tmp_path / "kubevip.yaml"
    path.write_bytes(CLI_CASES[name]())
    env = {k: v for k, v in os.environ.items() if k != "KUBEVIPD_CONFIG"}
    r = subprocess.run(
        [str(KUBEVIPD), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(line.startswith(f"{path}:") for line in lines), r.stderr
