"""Every invalid config is reported at its exact line and column, with the field and why."""

from __future__ import annotations

import pytest

from kubevipd.config import ConfigError, load_text

OK_VIP = "vip: {address: 192.168.0.75}\n"
UUID = "7a5b2b1e-0c2e-4b4e-9a52-1d3f0e6f8a11"
BGP_HEAD = (
    OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 10.0.0.11\n    local_as: 65000\n"
)
ONE_PEER = "    peers: [{address: 10.0.0.1, as: 65001}]\n"

# (name, yaml text, line, column, field, fragment of the message)
CASES = [
    ("empty file", "", 1, 1, "", "the file is empty"),
    ("only a comment", "# nothing\n", 1, 1, "", "the file is empty"),
    ("a list, not a mapping", "- vip\n", 1, 1, "", "expected a mapping"),
    ("a scalar", "hello\n", 1, 1, "", "expected a mapping"),
    ("two documents", OK_VIP + "---\n" + OK_VIP, 2, 1, "", "several YAML documents"),
    ("unclosed flow sequence", "vip:\n  address: [1.2.3.4\n", 3, 1, "", "YAML syntax"),
    ("tab indentation", "vip:\n\taddress: 1.2.3.4\n", 2, 1, "", "YAML syntax"),
    (
        "duplicate key",
        OK_VIP + "interface: a\ninterface: b\n",
        3,
        1,
        "",
        'duplicate key "interface"',
    ),
    ("vip missing", "interface: eth0\n", 1, 1, "vip", "is required"),
    ("vip empty", "vip:\n", 1, 1, "vip", "must be a mapping, not an empty value"),
    (
        "unknown top-level key, close",
        OK_VIP + "interfce: eth0\n",
        2,
        1,
        "interfce",
        "unknown key; did you mean 'interface'?",
    ),
    ("unknown key, nothing close", OK_VIP + "colour: blue\n", 2, 1, "colour", "unknown key"),
    (
        "unknown nested key",
        "vip:\n  adress: 1.2.3.4\n",
        2,
        3,
        "vip.adress",
        "did you mean 'address'?",
    ),
    ("no vip source", "vip:\n  port: 6443\n", 1, 1, "vip", "exactly one of address, dns or dhcp"),
    (
        "two vip sources",
        "vip:\n  address: 10.0.0.1\n  dns: {name: cp.example.com}\n",
        3,
        3,
        "vip.dns",
        "conflicts with vip.address",
    ),
    ("bad IPv4", "vip:\n  address: 192.168.0.300\n", 2, 12, "vip.address", "must be an IP address"),
    ("loopback VIP", "vip:\n  address: 127.0.0.1\n", 2, 12, "vip.address", "loopback"),
    ("multicast VIP", "vip:\n  address: 224.0.0.1\n", 2, 12, "vip.address", "multicast"),
    (
        "dual stack, same family",
        "vip:\n  address: [10.0.0.1, 10.0.0.2]\n",
        2,
        12,
        "vip.address",
        "one IPv4 and one IPv6",
    ),
    (
        "three addresses",
        "vip:\n  address: [10.0.0.1, 'fd00::1', 10.0.0.3]\n",
        2,
        12,
        "vip.address",
        "must be an IP address, or a list",
    ),
    (
        "IPv4 prefix too long",
        "vip:\n  address: 10.0.0.1\n  prefix_length: 33\n",
        3,
        18,
        "vip.prefix_length",
        "33 does not fit IPv4",
    ),
    (
        "prefix over 128",
        "vip:\n  address: 'fd00::1'\n  prefix_length: 129\n",
        3,
        18,
        "vip.prefix_length",
        "prefix length (0 to 128)",
    ),
    (
        "two prefixes for one address",
        "vip:\n  address: 10.0.0.1\n  prefix_length: [24, 64]\n",
        3,
        18,
        "vip.prefix_length",
        "give one per address",
    ),
    (
        "dns family first with prefix",
        "vip:\n  dns: {name: cp.example.com}\n  prefix_length: 24\n",
        3,
        18,
        "vip.prefix_length",
        "family 'first'",
    ),
    (
        "bad dns name",
        "vip:\n  dns:\n    name: 'cp example'\n",
        3,
        11,
        "vip.dns.name",
        "must be a DNS name",
    ),
    ("dhcp without hostname", "vip:\n  dhcp: {}\n", 2, 3, "vip.dhcp.hostname", "is required"),
    (
        "dhcp ipv6",
        "vip:\n  dhcp: {hostname: cp-vip, family: ipv6}\n",
        2,
        36,
        "vip.dhcp.family",
        "must be one of ipv4",
    ),
    (
        "port as string",
        "vip:\n  address: 10.0.0.1\n  port: '6443'\n",
        3,
        9,
        "vip.port",
        "must be a whole number, not a string",
    ),
    (
        "port out of range",
        "vip:\n  address: 10.0.0.1\n  port: 70000\n",
        3,
        9,
        "vip.port",
        "must be at most 65535",
    ),
    ("port zero", "vip:\n  address: 10.0.0.1\n  port: 0\n", 3, 9, "vip.port", "at least 1"),
    (
        "node name upper case",
        "node_name: CP1\n" + OK_VIP,
        1,
        12,
        "node_name",
        "lower-case DNS name",
    ),
    (
        "interface too long",
        "interface: averyveryverylongname\n" + OK_VIP,
        1,
        12,
        "interface",
        "1 to 15 characters",
    ),
    (
        "lease not longer than renew",
        OK_VIP + "election:\n  lease_duration: 3s\n",
        3,
        19,
        "election.lease_duration",
        "must be longer than renew_deadline (3s)",
    ),
    (
        "renew too close to retry",
        OK_VIP + "election:\n  renew_deadline: 3s\n  retry_period: 2.5s\n",
        4,
        17,
        "election.retry_period",
        "1.2 x retry_period",
    ),
    (
        "duration with bad unit",
        OK_VIP + "election:\n  lease_duration: 5 seconds\n",
        3,
        19,
        "election.lease_duration",
        "must be a duration",
    ),
    (
        "duration negative",
        OK_VIP + "election:\n  retry_period: -1\n",
        3,
        17,
        "election.retry_period",
        "must be a duration",
    ),
    (
        "duration below a millisecond",
        OK_VIP + "election:\n  retry_period: 0.5ms\n",
        3,
        17,
        "election.retry_period",
        "whole number of milliseconds",
    ),
    (
        "unknown backend",
        OK_VIP + "election:\n  backend: etcd\n",
        3,
        12,
        "election.backend",
        "must be one of kubernetes, none",
    ),
    (
        "relative kubeconfig",
        OK_VIP + "election:\n  kubeconfig: admin.conf\n",
        3,
        15,
        "election.kubeconfig",
        "absolute path",
    ),
    (
        "server without scheme",
        OK_VIP + "election:\n  server: 127.0.0.1:6443\n",
        3,
        11,
        "election.server",
        "must be a URL",
    ),
    (
        "server is the IPv4 VIP",
        OK_VIP + "election:\n  server: https://192.168.0.75:6443\n",
        3,
        11,
        "election.server",
        "https://192.168.0.75:6443 is the VIP, which nobody holds at bootstrap",
    ),
    (
        "server is the VIP, in a flow mapping and without a port",
        OK_VIP + "election: {server: 'https://192.168.0.75/'}\n",
        2,
        20,
        "election.server",
        "is the VIP",
    ),
    (
        "server is the IPv6 VIP, written another way",
        "vip:\n  address: [192.168.0.75, 'fd00:0:0::75']\nelection:\n"
        "  server: 'https://[fd00::75]:6443'\n",
        4,
        11,
        "election.server",
        "https://[fd00::75]:6443 is the VIP",
    ),
    (
        "server is the IPv4 VIP as an IPv4-mapped IPv6 address",
        OK_VIP + "election:\n  server: 'https://[::ffff:192.168.0.75]:6443'\n",
        3,
        11,
        "election.server",
        "is the VIP",
    ),
    (
        "server is the VIP's DNS name, other case, trailing dot",
        "vip:\n  dns: {name: CP.Example.com}\nelection:\n  server: https://cp.example.COM.:6443\n",
        4,
        11,
        "election.server",
        "is the VIP's DNS name (vip.dns.name), which nobody holds",
    ),
    (
        "server is the VIP's DHCP host name",
        "vip: {dhcp: {hostname: cp-vip}}\nelection: {server: 'https://CP-VIP:6443'}\n",
        2,
        20,
        "election.server",
        "is the VIP's DNS name (vip.dhcp.hostname)",
    ),
    (
        "server with credentials in it",
        OK_VIP + "election:\n  server: https://admin:s3cret@127.0.0.1:6443\n",
        3,
        11,
        "election.server",
        "https://127.0.0.1:6443 must not carry a user or password",
    ),
    (
        "health checks the VIP instead of this node's apiserver",
        OK_VIP + "health:\n  url: https://192.168.0.75:6443/readyz\n",
        3,
        8,
        "health.url",
        "names the VIP: the health gate must check this node's own apiserver",
    ),
    (
        "server with an unclosed bracket",
        OK_VIP + "election:\n  server: 'https://[fd00::75:6443'\n",
        3,
        11,
        "election.server",
        "must be a URL such as https://127.0.0.1:6443",
    ),
    (
        "lease name with capitals",
        OK_VIP + "election:\n  lease_name: Plndr\n",
        3,
        15,
        "election.lease_name",
        "Kubernetes name",
    ),
    ("announce without mode", OK_VIP + "announce: {}\n", 2, 1, "announce.mode", "is required"),
    (
        "mode misspelt",
        OK_VIP + "announce:\n  mode: arpp\n",
        3,
        9,
        "announce.mode",
        "did you mean 'arp'?",
    ),
    (
        "other mode's section",
        OK_VIP + "announce:\n  mode: arp\n  arp: {}\n"
        f"  metal: {{project_id: {UUID}, token_file: /etc/kubevip/metal.token}}\n",
        5,
        3,
        "announce.metal",
        "announce.mode is arp",
    ),
    (
        "bgp without section",
        OK_VIP + "announce:\n  mode: bgp\n",
        2,
        1,
        "announce",
        "needs an announce.bgp section",
    ),
    (
        "bgp empty peers",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 10.0.0.11\n"
        "    local_as: 65000\n    peers: []\n",
        7,
        12,
        "announce.bgp.peers",
        "peer list is empty",
    ),
    (
        "bgp router id IPv6",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 'fd00::1'\n"
        "    local_as: 65000\n    peers: [{address: 10.0.0.1, as: 65000}]\n",
        5,
        16,
        "announce.bgp.router_id",
        "must be an IPv4 address",
    ),
    (
        "bgp AS zero",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 10.0.0.11\n"
        "    local_as: 0\n    peers: [{address: 10.0.0.1, as: 65000}]\n",
        6,
        15,
        "announce.bgp.local_as",
        "at least 1",
    ),
    (
        "bgp peer without as",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 10.0.0.11\n"
        "    local_as: 65000\n    peers:\n      - address: 10.0.0.1\n",
        8,
        9,
        "announce.bgp.peers[0].as",
        "is required",
    ),
    (
        "bgp peer password two ways",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n"
        "    router_id: 10.0.0.11\n    local_as: 65000\n    peers:\n      - address: 10.0.0.1\n"
        "        as: 65000\n        password_file: /etc/kubevip/bgp.pass\n"
        "        password: hunter2\n",
        11,
        9,
        "announce.bgp.peers[0].password",
        "conflicts with password_file",
    ),
    (
        "bgp duplicate peer",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_id: 10.0.0.11\n"
        "    local_as: 65000\n    peers:\n      - {address: 10.0.0.1, as: 65000}\n"
        "      - {address: 10.0.0.1, as: 65001}\n",
        9,
        19,
        "announce.bgp.peers[1].address",
        "listed twice",
    ),
    (
        "bgp hold time under 3s",
        BGP_HEAD + "    hold_time: 2s\n" + ONE_PEER,
        7,
        16,
        "announce.bgp.hold_time",
        "2s is too short: a BGP hold time is 0 or at least 3s (RFC 4271)",
    ),
    (
        "bgp keepalive over a third of the hold time",
        BGP_HEAD + "    hold_time: 9s\n    keepalive: 4s\n" + ONE_PEER,
        8,
        16,
        "announce.bgp.keepalive",
        "keepalive (4s) must be from 1s to hold_time / 3 (3s for hold_time 9s), the BGP rule "
        "of thumb",
    ),
    (
        "bgp keepalive under a second",
        BGP_HEAD + "    keepalive: 500ms\n" + ONE_PEER,
        7,
        16,
        "announce.bgp.keepalive",
        "500ms is not a whole number of seconds: BGP carries its timers in seconds",
    ),
    (
        "bgp hold time not a duration",
        BGP_HEAD + "    hold_time: 30 seconds\n" + ONE_PEER,
        7,
        16,
        "announce.bgp.hold_time",
        "must be a duration",
    ),
    (
        "bgp router id and router interface",
        BGP_HEAD + "    router_interface: eth0\n" + ONE_PEER,
        7,
        5,
        "announce.bgp.router_interface",
        "conflicts with router_id: give the router ID one way only",
    ),
    (
        "bgp neither router id nor router interface",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    local_as: 65000\n" + ONE_PEER,
        4,
        3,
        "announce.bgp",
        "needs router_id (an IPv4 address, usually the node's) or router_interface",
    ),
    (
        "bgp router interface with a slash",
        OK_VIP + "announce:\n  mode: bgp\n  bgp:\n    router_interface: eth0/1\n"
        "    local_as: 65000\n" + ONE_PEER,
        5,
        23,
        "announce.bgp.router_interface",
        "must be an interface name",
    ),
    (
        "bgp source address and source interface",
        BGP_HEAD + "    source_address: 10.0.0.11\n    source_interface: eth0\n" + ONE_PEER,
        8,
        5,
        "announce.bgp.source_interface",
        "conflicts with source_address",
    ),
    (
        "bgp source address not an address",
        BGP_HEAD + "    source_address: eth0\n" + ONE_PEER,
        7,
        21,
        "announce.bgp.source_address",
        "must be an IPv4 or IPv6 address",
    ),
    (
        "bgp source address of another family than a peer",
        BGP_HEAD
        + "    source_address: 10.0.0.11\n    peers:\n      - {address: 'fd00::1', as: 1}\n",
        9,
        19,
        "announce.bgp.peers[0].address",
        "peer fd00::1 is IPv6 but source_address 10.0.0.11 is IPv4",
    ),
    (
        "bgp peer port zero",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001, port: 0}\n",
        8,
        46,
        "announce.bgp.peers[0].port",
        "must be at least 1",
    ),
    (
        "bgp peer port too large",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001, port: 65536}\n",
        8,
        46,
        "announce.bgp.peers[0].port",
        "must be at most 65535",
    ),
    (
        "bgp peer empty families",
        BGP_HEAD + "    peers:\n      - address: 10.0.0.1\n        as: 65001\n"
        "        families: []\n",
        10,
        19,
        "announce.bgp.peers[0].families",
        "must be a non-empty list of ipv4-unicast and ipv6-unicast",
    ),
    (
        "bgp peer unknown family",
        BGP_HEAD
        + "    peers:\n      - {address: 10.0.0.1, as: 65001, families: [ipv4-multicast]}\n",
        8,
        51,
        "announce.bgp.peers[0].families[0]",
        "must be one of ipv4-unicast, ipv6-unicast",
    ),
    (
        "bgp peer family twice",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001,"
        " families: [ipv4-unicast, ipv4-unicast]}\n",
        8,
        50,
        "announce.bgp.peers[0].families",
        "each at most once",
    ),
    (
        "bgp peer families without the VIP's",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001, families: [ipv6-unicast]}\n",
        8,
        50,
        "announce.bgp.peers[0].families",
        "lists none of the VIP's families (ipv4-unicast): this peer would learn no route",
    ),
    (
        "bgp multihop TTL 1",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001, multihop: 1}\n",
        8,
        50,
        "announce.bgp.peers[0].multihop",
        "must be true, false or a TTL from 2 to 255",
    ),
    (
        "bgp multihop TTL 256",
        BGP_HEAD + "    peers:\n      - {address: 10.0.0.1, as: 65001, multihop: 256}\n",
        8,
        50,
        "announce.bgp.peers[0].multihop",
        "must be true, false or a TTL from 2 to 255",
    ),
    (
        "election backend none with arp",
        OK_VIP + "election:\n  backend: none\nannounce: {mode: arp}\n",
        3,
        12,
        "election.backend",
        "none (no election: every healthy node holds the VIP) needs announce.mode bgp, where "
        "each node announces a route (ECMP); with announce.mode arp every node would claim "
        "the VIP on one L2 segment, an address conflict",
    ),
    (
        "election backend none without an announce section (arp)",
        OK_VIP + "election: {backend: none}\n",
        2,
        21,
        "election.backend",
        "an address conflict",
    ),
    (
        "election backend none with metal",
        OK_VIP + "election: {backend: none}\nannounce:\n  mode: metal\n"
        f"  metal: {{project_id: {UUID}, token_file: /etc/kubevip/metal.token}}\n",
        2,
        21,
        "election.backend",
        "moving the Elastic IP",
    ),
    (
        "metal without token",
        OK_VIP + f"announce:\n  mode: metal\n  metal:\n    project_id: {UUID}\n",
        4,
        3,
        "announce.metal",
        "needs token_file or token_credential",
    ),
    (
        "metal bad project id",
        OK_VIP + "announce:\n  mode: metal\n  metal:\n    project_id: vipTest\n"
        "    token_file: /etc/kubevip/metal.token\n",
        5,
        17,
        "announce.metal.project_id",
        "project UUID",
    ),
    (
        "metal with dns vip",
        "vip: {dns: {name: cp.example.com}}\nannounce:\n  mode: metal\n"
        f"  metal: {{project_id: {UUID}, token_file: /etc/kubevip/metal.token}}\n",
        1,
        1,
        "vip",
        "Elastic IP",
    ),
    (
        "credential name with slash",
        OK_VIP + f"announce:\n  mode: metal\n  metal:\n"
        f"    project_id: {UUID}\n    token_credential: a/b\n",
        6,
        23,
        "announce.metal.token_credential",
        "systemd credential name",
    ),
    (
        "metrics without port",
        OK_VIP + "metrics: {listen: 127.0.0.1}\n",
        2,
        19,
        "metrics.listen",
        "must be host:port",
    ),
    (
        "metrics port out of range",
        OK_VIP + "metrics: {listen: '127.0.0.1:99999'}\n",
        2,
        19,
        "metrics.listen",
        "out of range",
    ),
    (
        "log level unknown",
        OK_VIP + "log: {level: verbose}\n",
        2,
        14,
        "log.level",
        "must be one of debug, info, warning, error",
    ),
    (
        "boolean where a string belongs",
        OK_VIP + "interface: true\n",
        2,
        12,
        "interface",
        "must be a string, not true/false",
    ),
    (
        "date where a string belongs",
        "node_name: 2024-01-01\n" + OK_VIP,
        1,
        12,
        "node_name",
        "must be a string, not a date",
    ),
]

# Bad input that gave a traceback, a multi-line error at 1:1, or an error at another line.
LAUGHS = OK_VIP + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 10)}]\n" for i in range(6)
)
HOSTILE = [
    (
        "a float too large for a duration",
        OK_VIP + "election:\n  retry_period: 1.0e+308\n",
        3,
        17,
        "election.retry_period",
        "a duration must be at most 24h",
    ),
    (
        "an infinite duration",
        OK_VIP + "election:\n  retry_period: .inf\n",
        3,
        17,
        "election.retry_period",
        "at most 24h",
    ),
    (
        "a NaN duration",
        OK_VIP + "election:\n  retry_period: .nan\n",
        3,
        17,
        "election.retry_period",
        "a duration must be a number, not NaN",
    ),
    (
        "a duration of 10^30 seconds",
        OK_VIP + "election:\n  lease_duration: 1" + "0" * 30 + "\n",
        3,
        19,
        "election.lease_duration",
        "at most 24h",
    ),
    (
        "a duration of 400 digits",
        OK_VIP + "election:\n  lease_duration: " + "9" * 400 + "s\n",
        3,
        19,
        "election.lease_duration",
        "at most 24h",
    ),
    ("a duration over a day", OK_VIP + "health:\n  period: 25h\n", 3, 11, "health.period", "24h"),
    (
        "a NUL in the file",
        OK_VIP + "interface: et\x00h0\n",
        2,
        14,
        "",
        "the file holds U+0000, a control character, which YAML does not allow: remove it",
    ),
    (
        "an escape character in a comment",
        OK_VIP + "# \x1b[31m red\n",
        2,
        3,
        "",
        "U+001B, a control character",
    ),
    (
        "a lone surrogate in the text",
        OK_VIP + "interface: a\ud800\n",
        2,
        13,
        "",
        "U+D800, half of a UTF-16 surrogate pair",
    ),
    (
        "an escaped NUL in a value",
        OK_VIP + 'interface: "eth\\0"\n',
        2,
        12,
        "interface",
        "contains U+0000, a control character, which no setting takes",
    ),
    (
        "an escaped newline in a URL",
        OK_VIP + 'health:\n  url: "https://127.0.0.1:6443/readyz\\n"\n',
        3,
        8,
        "health.url",
        "contains U+000A",
    ),
    (
        "an escaped lone surrogate in a value",
        OK_VIP + 'interface: "\\ud800"\n',
        2,
        12,
        "interface",
        "contains U+D800",
    ),
    (
        "a newline in a key",
        'vip:\n  address: 192.168.0.75\n  "x\\ny": 1\n',
        3,
        3,
        'vip["x\\ny"]',
        "unknown key",
    ),
    (
        "a date that is not one",
        OK_VIP + "node_name: 2024-13-01\n",
        2,
        12,
        "",
        "YAML syntax: cannot read this value as a date (!!timestamp): month must be in 1..12; "
        "quote it if it is a string",
    ),
    (
        "a tag that does not fit",
        OK_VIP + "interface: !!bool maybe\n",
        2,
        12,
        "",
        "cannot read this value as true or false (!!bool)",
    ),
    (
        "a number of 5000 digits",
        "vip:\n  address: 192.168.0.75\n  port: " + "9" * 5000 + "\n",
        3,
        9,
        "",
        "cannot read this value as a whole number (!!int): it has more than 4300 digits",
    ),
    (
        "an unknown YAML version",
        "%YAML 1.3\n---\n" + OK_VIP,
        1,
        1,
        "",
        "%YAML 1.3 is not a version kubevipd reads",
    ),
    (
        "flow lists nested 2000 deep",
        OK_VIP + "interface: " + "[" * 2000 + "]" * 2000 + "\n",
        2,
        112,
        "",
        "nested more than 100 levels deep",
    ),
    (
        "block lists nested 300 deep",
        OK_VIP + "interface:\n  " + "- " * 300 + "x\n",
        3,
        201,
        "",
        "nested more than 100 levels deep",
    ),
    ("a billion laughs", LAUGHS, 6, 5, "l4", "holds more than 100000 values"),
    (
        "a bad value merged in with <<",
        "vip:\n  <<: {address: 192.168.0.300}\n",
        2,
        17,
        "vip.address",
        "must be an IP address",
    ),
    ("a number as a key", OK_VIP + "log: {level: info, 1: x}\n", 2, 20, "log.1", "unknown key"),
    ("null as a key", OK_VIP + "? null\n: x\n", 2, 3, "null", "unknown key"),
    ("a list after a comment", "# kubevip.yaml\n- vip\n", 2, 1, "", "expected a mapping"),
    (
        "a second document after '...'",
        OK_VIP + "...\nvip: {}\n",
        3,
        1,
        "",
        "several YAML documents",
    ),
]
CASES += HOSTILE


def _ids() -> list[str]:
    return [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "text", "line", "col", "field", "fragment"), CASES, ids=_ids())
def test_invalid_config_is_reported_where_it_is(
    name: str, text: str, line: int, col: int, field: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_text(text, "kubevip.yaml")
    first = raised.value.diagnostics[0]
    assert (first.line, first.column, first.field) == (line, col, field), str(raised.value)
    assert fragment in first.message, str(raised.value)
    # the compiler format, one line per error
    assert str(first).startswith(f"kubevip.yaml:{line}:{col}:")
    assert "\n" not in str(first)


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_all_errors_are_reported_at_once_in_file_order() -> None:
    text = (
        "node_name: CP1\n"
        "interfce: eth0\n"
        "vip:\n  address: 10.0.0.300\n  port: 0\n"
        "election:\n  lease_duration: 2s\n"
        "log: {level: loud}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_text(text, "f.yaml")
    got = [(d.line, d.field) for d in raised.value.diagnostics]
    assert got == [
        (1, "node_name"),
        (2, "interfce"),
        (4, "vip.address"),
        (5, "vip.port"),
        (7, "election.lease_duration"),
        (8, "log.level"),
    ]


def test_a_server_at_the_vip_is_one_line_naming_the_fix_and_the_default() -> None:
    text = (
        "vip:\n  address: 192.168.0.75\n  port: 7443\n"
        "election:\n  server: 'https://user:pa55@192.168.0.75:7443'\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_text(text, "kubevip.yaml")
    assert str(raised.value) == (
        "kubevip.yaml:5:11: election.server: https://192.168.0.75:7443 is the VIP, which nobody "
        "holds at bootstrap or after a crash: the election must reach this node's own "
        "apiserver; remove election.server (default https://127.0.0.1:7443) or name a local "
        "address"
    )
    assert "pa55" not in str(raised.value)


def test_a_server_at_the_vip_is_reported_with_the_other_sections_errors() -> None:
    text = (
        "vip: {address: 192.168.0.75}\n"
        "election: {server: 'https://192.168.0.75:6443'}\n"
        "log: {level: loud}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_text(text, "f.yaml")
    assert [(d.line, d.field) for d in raised.value.diagnostics] == [
        (2, "election.server"),
        (3, "log.level"),
    ]
