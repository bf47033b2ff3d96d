"""Published-port requests and host port reservations."""

from __future__ import annotations

import socket

import pytest

from matou.errors import Conflict, InvalidArgument
from matou.network.ports import Request, requests, reserve


def test_requests_from_bindings_and_publish_all() -> None:
    reqs = requests({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                     "53/udp": [{"HostIp": "", "HostPort": ""}], "90/tcp": [{"HostPort": "9000-9010"}]},
                    True, {"80/tcp": {}, "443/tcp": {}, "53/udp": {}})
    assert Request("tcp", 80, "127.0.0.1", 8080, 8080) in reqs
    assert Request("udp", 53, "0.0.0.0", 0, 0) in reqs
    assert Request("tcp", 90, "0.0.0.0", 9000, 9010) in reqs
    assert Request("tcp", 443, "0.0.0.0", 0, 0) in reqs  # -P: exposed but not bound
    assert len(reqs) == 4  # the IPv6 half of a dual-stack binding is dropped
    assert requests(None, False, {"80/tcp": {}}) == []
    for bad in ({"80/sctp": [{}]}, {"80/tcp": [{"HostIp": "nope"}]}, {"x/tcp": [{}]},
                {"80/tcp": [{"HostPort": "99999"}]}):
        with pytest.raises(InvalidArgument):
            requests(bad, False, None)


def test_reserve_random_fixed_and_taken() -> None:
    s, port = reserve(Request("tcp", 80, "127.0.0.1", 0, 0), "web")
    try:
        assert port > 0 and s.getsockname() == ("127.0.0.1", port)
        with pytest.raises(Conflict, match=f"Bind for 127.0.0.1:{port} failed: port is already allocated"):
            reserve(Request("tcp", 80, "127.0.0.1", port, port), "web2")
        s2, port2 = reserve(Request("tcp", 80, "127.0.0.1", port, min(port + 50, 65535)), "web3")  # a range
        assert port < port2 <= port + 50
        s2.close()
        u, uport = reserve(Request("udp", 53, "127.0.0.1", port, port), "dns")  # same number, other protocol
        assert uport == port
        u.close()
    finally:
        s.close()
    with pytest.raises(InvalidArgument):
        reserve(Request("tcp", 80, "192.0.2.254", 0, 0), "web")


def test_taken_by_another_program() -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        with pytest.raises(Conflict):
            reserve(Request("tcp", 80, "0.0.0.0", other.getsockname()[1], other.getsockname()[1]), "web")
    finally:
        other.close()
