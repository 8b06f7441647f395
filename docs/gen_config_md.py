#!/usr/bin/env python3
"""Generate docs/config.md from kubevipd/config/schema.json.

Run it after changing the schema; `--check` (used by the tests) fails when the file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "kubevipd" / "config" / "schema.json"
OUTPUT = ROOT / "docs" / "config.md"


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        merged = dict(defs[ref.rsplit("/", 1)[-1]])
        merged.update({k: v for k, v in node.items() if k != "$ref"})
        return merged
    return node


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _resolve(node, defs)
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if node.get("format") in ("ipv4", "ipv6"):
        return f"{node['format'].replace('ip', 'IP')} address"
    if "anyOf" in node:
        kinds = {_type(a, defs) for a in node["anyOf"]}
        if node.get("x-error", "").startswith("must be a duration"):
            return "duration"
        if kinds == {"IPv4 address", "IPv6 address"} or "IPv4 or IPv6" in node.get("x-error", ""):
            return "IP address"
        return " or ".join(sorted(kinds))
    t = node.get("type", "")
    if t == "array":
        return f"list of {_type(node.get('items', {}), defs)}"
    return {
        "object": "mapping",
        "integer": "integer",
        "string": "string",
        "boolean": "boolean",
        "number": "number",
    }.get(t, t or "any")


def _rows(node: dict[str, Any], defs: dict[str, Any], prefix: str, out: list[str]) -> None:
    node = _resolve(node, defs)
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        child = _resolve(child, defs)
        path = f"{prefix}{key}"
        default = child.get("default")
        default_txt = f"`{json.dumps(default)}`" if default is not None else ""
        req = "yes" if key in required else ""
        desc = child.get("description", "").replace("|", "\\|")
        if child.get("x-error") and _type(child, defs) == "string":
            desc += f" Must be: {child['x-error'].removeprefix('must be ')}."
        out.append(f"| `{path}` | {_type(child, defs)} | {req} | {default_txt} | {desc} |")
        if child.get("type") == "object":
            _rows(child, defs, f"{path}.", out)
        items = child.get("items")
        if child.get("type") == "array" and isinstance(items, dict) and "properties" in items:
            _rows(items, defs, f"{path}[].", out)


def render() -> str:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    defs = schema.get("$defs", {})
    lines = [
        "# kubevip.yaml reference",
        "",
        "<!-- Generated from kubevipd/config/schema.json by docs/gen_config_md.py: do not edit -->",
        "",
        schema["description"],
        "",
        "Validate a file with `kubevipd check-config PATH`; print the schema with "
        "`kubevipd schema`. A commented example is `etc/kubevip.yaml.example`.",
        "",
        "Rules beyond the table: `vip` takes exactly one of `address`, `dns` or `dhcp`; "
        "`lease_duration` > `renew_deadline` > 1.2 x `retry_period` (client-go's rule); "
        "`announce` holds only the section of its `mode` (`arp` may be left out); a BGP peer and "
        "the Metal token take their secret one way only (`*_file`, `*_credential` for systemd's "
        "`LoadCredential=`, or inline with a warning); prefix lengths fit their family; "
        "`announce.bgp` takes exactly one of `router_id` and `router_interface`, at most one of "
        "`source_address` and `source_interface` (an address of each peer's family), "
        "`hold_time` of at least 3s and `keepalive` from 1s to `hold_time` / 3, both in whole "
        "seconds; a peer's `families` include one of the VIP's; `election.backend: none` "
        "needs `announce.mode: bgp`.",
        "",
        "| key | type | required | default | description |",
        "|---|---|---|---|---|",
    ]
    _rows(schema, defs, "", lines)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/config.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text("utf-8") != text:
            print(f"{OUTPUT} is stale: run python3 docs/gen_config_md.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
