"""kube-vip's BGP settings (bgp_* env vars) as announce.bgp, for the manifest importer.

kube-vip's names, units and defaults come from its source (pkg/kubevip/config_envvar.go): its
timers are seconds, its bgp_peers entries ``address:as:password:multihop[:port...]``. What
cannot be carried over, or means something else here, becomes a note; a password in the
manifest never reaches the output (the note says which file to put it in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kubevipd.manifest import kubevip as kv

Doc = dict[str, Any]


class BgpImport:
    """Mixed into the importer, which supplies the env and the notes."""

    env: dict[str, str]
    refs: dict[str, Mapping[str, Any]]

    def note(self, text: str) -> None:
        raise NotImplementedError

    def flag(self, name: str) -> bool:
        raise NotImplementedError

    def _from_secret_ref(self, var: str, where: str) -> str:
        raise NotImplementedError

    def _one_of(self, bgp: Doc, first: tuple[str, str], second: tuple[str, str], both: str) -> bool:
        """Two kube-vip variables for one setting, ``first`` winning as in kube-vip: each an
        (env var, kubevip.yaml key) pair; ``both`` is noted when the two are set. False when
        neither is."""
        if self.env.get(first[0]):
            bgp[first[1]] = self.env[first[0]]
            if self.env.get(second[0]):
                self.note(both)
            return True
        if self.env.get(second[0]):
            bgp[second[1]] = self.env[second[0]]
            return True
        return False

    def _bgp(self) -> Doc:
        bgp: Doc = {}
        if not self._one_of(
            bgp,
            ("bgp_routerid", "router_id"),
            ("bgp_routerinterface", "router_interface"),
            "bgp_routerinterface: not carried over: bgp_routerid is set too, and kube-vip lets "
            "bgp_routerid win",
        ):
            self.note(
                "bgp_routerid: not set; put this node's IPv4 address in announce.bgp.router_id"
            )
            bgp["router_id"] = "0.0.0.0"
        if self.env.get("bgp_as"):
            bgp["local_as"] = int(self.env["bgp_as"])
        else:
            bgp["local_as"] = 65000
            self.note(
                "bgp_as: not set; kube-vip's default 65000 is written to "
                "announce.bgp.local_as: check it"
            )
        self._one_of(
            bgp,
            ("bgp_sourceip", "source_address"),
            ("bgp_sourceif", "source_interface"),
            "bgp_sourceif: not carried over: kube-vip refuses it beside bgp_sourceip (they are "
            "mutually exclusive); source_address is kept",
        )
        for env, key in (("bgp_hold_time", "hold_time"), ("bgp_keepalive_interval", "keepalive")):
            value = self.env.get(env, "").strip()
            if not value:
                continue
            if not value.isdigit() or int(value) == 0:
                self.note(
                    f"{env}: {value!r} is not carried over: kubevipd takes a whole number of "
                    f"seconds (hold_time at least 3, keepalive at least 1); the default applies"
                )
                continue
            bgp[key] = f"{int(value)}s"
        self._keepalive_as_kube_vip_sends_it(bgp)
        peers: list[kv.PeerString] = []
        if self.env.get("bgp_peers"):
            peers = [kv.PeerString.parse(p) for p in self.env["bgp_peers"].split(",") if p.strip()]
        if self.env.get("bgp_peeraddress"):
            peers.append(
                kv.PeerString(
                    self.env["bgp_peeraddress"],
                    int(self.env.get("bgp_peeras") or 65000),
                    self.env.get("bgp_peerpass", ""),
                    self.flag("bgp_multihop"),
                )
            )
        out = []
        for i, p in enumerate(peers):
            peer: Doc = {"address": p.address, "as": p.asn}
            if p.port != kv.BGP_PORT:
                peer["port"] = p.port
                self.note(
                    f"bgp_peers: peer {i} ({p.address}) names port {p.port}, which kube-vip "
                    f"parsed but never used (it always connected to {kv.BGP_PORT}); kubevipd "
                    f"connects to {p.port}: check that the router listens there"
                )
            if p.multihop:
                peer["multihop"] = kv.KUBE_VIP_MULTIHOP_TTL  # kube-vip's (true is 255 here)
            if p.rest:
                self.note(
                    f"bgp_peers: peer {i} ({p.address}): the MP-BGP and BFD options after the "
                    "port are not carried over"
                )
            file = self._peer_password(i, p.password)
            if file:
                peer["password_file"] = file
            out.append(peer)
        bgp["peers"] = out
        return bgp

    def _keepalive_as_kube_vip_sends_it(self, bgp: Doc) -> None:
        """kube-vip's keepalive is 10s whatever the hold time; kubevipd's default is a third of
        it. Written out where they differ, unless 10s breaks BGP's rule (then a note)."""
        if "keepalive" in bgp or "hold_time" not in bgp:
            return  # given, or both defaults: 30s / 10s, the same on both sides
        hold = int(bgp["hold_time"][:-1])
        ours = max(1, hold // 3)
        theirs = kv.BGP_KEEPALIVE_DEFAULT_S
        if theirs * 3 <= hold:
            if ours != theirs:
                bgp["keepalive"] = f"{theirs}s"
            return
        self.note(
            f"bgp_keepalive_interval: not set, so kube-vip sent keepalives every {theirs}s, "
            f"more than a third of its {hold}s hold time; kubevipd sends them every {ours}s "
            "(hold_time / 3)"
        )

    def _peer_password(self, index: int, text: str) -> str | None:
        if not text:
            return None
        ref = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text)
        if ref and ref.group(1) in self.refs:
            return self._from_secret_ref(ref.group(1), f"announce.bgp.peers[{index}].password")
        path = f"{kv.CONFIG_DIR}/bgp-peer-{index}.pass"
        self.note(
            f"bgp_peers: the password of peer {index} is in the manifest; write it into "
            f"{path} (mode 0600): it is not copied to the output"
        )
        return path
