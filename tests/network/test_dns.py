"""The embedded resolver: container names answered locally, everything else forwarded, over UDP and TCP."""

from __future__ import annotations

import asyncio
import socket
import struct

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from matou.network.dns import DNSServer

NAMES = {"web": ["10.0.0.2"], "www": ["10.0.0.2"], "db": ["10.0.0.3"]}


def _server(upstreams: list[str]) -> DNSServer:
    rev = {ip[0]: n for n, ip in NAMES.items()}
    return DNSServer(lambda n: NAMES.get(n), lambda ip: rev.get(ip), lambda: upstreams)


def test_answer_local() -> None:
    s = _server([])
    r = DNSRecord.parse(s.answer_local(DNSRecord.question("WEB.").pack()) or b"")
    assert [str(a.rdata) for a in r.rr] == ["10.0.0.2"] and r.rr[0].ttl == 600
    r = DNSRecord.parse(s.answer_local(DNSRecord.question("db", "AAAA").pack()) or b"")
    assert r.header.rcode == RCODE.NOERROR and not r.rr  # a container name without IPv6: no data, not NXDOMAIN
    r = DNSRecord.parse(s.answer_local(DNSRecord.question("3.0.0.10.in-addr.arpa", "PTR").pack()) or b"")
    assert str(r.rr[0].rdata) == "db."
    assert s.answer_local(DNSRecord.question("example.org").pack()) is None
    assert s.answer_local(DNSRecord.question("web", "MX").pack()) is None
    assert s.answer_local(b"garbage") is None


def _fake_upstream() -> tuple[socket.socket, socket.socket]:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", u.getsockname()[1]))
    t.listen(4)
    return u, t


def _upstream_reply(data: bytes) -> bytes:
    q = DNSRecord.parse(data)
    r = q.reply()
    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.99"), ttl=30))
    return r.pack()


async def _serve_upstream(u: socket.socket, t: socket.socket) -> tuple[asyncio.BaseTransport, asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()

    class P(asyncio.DatagramProtocol):
        def connection_made(self, tr: asyncio.BaseTransport) -> None:
            self.tr = tr

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.tr.sendto(_upstream_reply(data), addr)  # type: ignore[attr-defined]

    utr, _ = await loop.create_datagram_endpoint(P, sock=u)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = struct.unpack("!H", await r.readexactly(2))[0]
        rep = _upstream_reply(await r.readexactly(n))
        w.write(struct.pack("!H", len(rep)) + rep)
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, sock=t)
    return utr, srv


def test_serve_and_forward() -> None:
    async def main() -> None:
        up_u, up_t = _fake_upstream()
        utr, usrv = await _serve_upstream(up_u, up_t)
        port = up_u.getsockname()[1]
        s = _server(["127.0.0.1:1", f"127.0.0.1:{port}"])  # the first upstream is dead (refused): next one
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        u.bind(("127.0.0.1", 0))
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        t.bind(("127.0.0.1", 0))
        t.listen(4)
        await s.start(u, t)
        loop = asyncio.get_running_loop()
        try:
            def udp_ask(name: str) -> DNSRecord:
                c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                c.settimeout(5)
                c.sendto(DNSRecord.question(name).pack(), u.getsockname())
                data = c.recv(4096)
                c.close()
                return DNSRecord.parse(data)

            def tcp_ask(name: str) -> DNSRecord:
                c = socket.create_connection(t.getsockname(), timeout=5)
                q = DNSRecord.question(name).pack()
                c.sendall(struct.pack("!H", len(q)) + q)
                n = struct.unpack("!H", c.recv(2))[0]
                data = b""
                while len(data) < n:
                    data += c.recv(n - len(data))
                c.close()
                return DNSRecord.parse(data)

            r = await loop.run_in_executor(None, udp_ask, "web")
            assert str(r.rr[0].rdata) == "10.0.0.2"
            r = await loop.run_in_executor(None, udp_ask, "example.org")
            assert str(r.rr[0].rdata) == "192.0.2.99"
            r = await loop.run_in_executor(None, tcp_ask, "db")
            assert str(r.rr[0].rdata) == "10.0.0.3"
            r = await loop.run_in_executor(None, tcp_ask, "example.net")
            assert str(r.rr[0].rdata) == "192.0.2.99"
        finally:
            s.close()
            utr.close()
            usrv.close()

    asyncio.run(main())


def test_no_upstream_is_servfail() -> None:
    async def main() -> None:
        s = _server([])
        reply = await s.forward(DNSRecord.question("example.org").pack(), tcp=False)
        assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL

    asyncio.run(main())
