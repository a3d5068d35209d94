"""Attacks on `ociimg run`'s network flags: a value that reaches /etc/hosts or
/etc/resolv.conf must not carry a line (or field) break into them."""

from __future__ import annotations

import pytest

from ociimg.cli.netopts import network_options, parse_add_host
from ociimg.errors import InvalidArgument
from ociimg.network import etcfiles

_ARGS = dict(network="bridge", publish=[], publish_all=False, dns=[], dns_search=[],
             dns_option=[], add_host=[], network_alias=[], ip=None, mac_address=None,
             hostname=None)
# ipaddress accepts anything after '%' as an IPv6 scope id and str() returns it.
SCOPED = ["fe80::1%a\n6.6.6.6\tevil.example", "fe80::1%a b", "::1%x\tevil", "fe80::1%eth0"]


@pytest.mark.parametrize("ip", SCOPED)
def test_add_host_refuses_a_scoped_address(ip: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_add_host(f"x:{ip}")


@pytest.mark.parametrize("ip", SCOPED)
def test_dns_and_ip_refuse_a_scoped_address(ip: str) -> None:
    with pytest.raises(InvalidArgument):
        network_options(**{**_ARGS, "dns": [ip]})
    with pytest.raises(InvalidArgument):
        network_options(**{**_ARGS, "ip": ip})


def test_what_passes_writes_one_line_per_entry() -> None:
    opts = network_options(**{**_ARGS, "dns": ["fe80::2", "10.0.0.53"],
                              "add_host": ["db:fe80::1", "web:10.0.0.5"],
                              "dns_search": ["example.com"], "dns_option": ["ndots:2"]})
    hosts = etcfiles.hosts("h", None, [], opts.add_hosts)
    assert [line.split("\t")[1] for line in hosts.splitlines()[2:4]] == ["db", "web"]
    assert len(hosts.splitlines()) == 5
    resolv = etcfiles.resolv_conf(opts.dns, opts.dns_search, opts.dns_options)
    assert resolv.splitlines() == ["search example.com", "nameserver fe80::2",
                                   "nameserver 10.0.0.53", "options ndots:2"]
