"""Where an untrusted run may connect and listen: `NetPolicy`, `enforce`.

The command line trusts its workflows and sets no policy. The server runs
each uploaded workflow inside `enforce`, which makes the policy current for
the run's task and every task it starts (a context variable), and checks
two things:

* **hosts**, by name, before a request: `check_url` (called by the network
  nodes for every URL they use, an item's included) and the server's
  validation of `OutboundUrl` fields refuse a host no ``allow`` pattern
  names;
* **addresses**, after DNS resolution: an audit hook (`sys.addaudithook`)
  sees every ``socket.connect``, ``socket.sendto`` and ``socket.bind`` of a
  task under the policy, with the IP address the socket is about to use,
  and refuses loopback, link-local, private, multicast, unspecified and
  reserved addresses (IPv4 and IPv6, IPv4-mapped IPv6 unwrapped) unless
  ``allow_private`` or an address pattern names them. The check is on the
  address the socket connects to, so a name that resolves to a public
  address at validation and to 127.0.0.1 later (DNS rebinding) is refused
  all the same, whichever library makes the connection. Binding is allowed
  on loopback only, unless ``allow_listen`` names the address.

The hook sees only what Python's ``socket`` module does; an event loop that
connects in C (uvloop) would bypass it, so `enforce` refuses to run on
anything but the standard asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from ..errors import NetworkDenied

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["NetPolicy", "check_url", "current_policy", "enforce"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "nats": 4222,
    "tls": 4222,
}


# A broker address without a scheme (Kafka's ``host:port``).
_HOST_PORT = re.compile(r"[^/?#@:\[\]]+:\d+|\[[0-9a-fA-F:.]+\]:\d+")


@dataclass(frozen=True)
class _Pattern:
    text: str
    host: str | None = None  # a name, or "*.suffix", or "*"
    network: IPNetwork | None = None  # an address or a CIDR block
    port: int | None = None  # None: any port

    def matches_host(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host == "*":
            return True
        address = _ip(host)
        if address is not None:
            return self.network is not None and address in self.network
        if self.host is None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def matches_address(self, address: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        return self.network is not None and address in self.network


def _parse_pattern(text: str) -> _Pattern:
    """``HOST[:PORT]``: a name, ``*.suffix``, ``*``, an IP (``[v6]``) or CIDR."""
    raw = text.strip().lower()
    host, port_text = raw, ""
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            msg = f"allow pattern {text!r}: an IPv6 address needs its closing ']'"
            raise ValueError(msg)
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            msg = f"allow pattern {text!r}: expected ':PORT' after ']'"
            raise ValueError(msg)
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    port: int | None = None
    if port_text and port_text != "*":
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            msg = f"allow pattern {text!r}: port must be 1-65535 or '*'"
            raise ValueError(msg)
        port = int(port_text)
    if not host:
        msg = f"allow pattern {text!r} names no host"
        raise ValueError(msg)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        if "/" in host or ":" in host:
            msg = f"allow pattern {text!r} is not HOST[:PORT] (IPv6 goes in [])"
            raise ValueError(msg) from None
        return _Pattern(text, host=host, port=port)
    return _Pattern(text, network=network, port=port)


def _ip(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _special(address: IPAddress) -> str | None:
    """Why an address is off limits by default, or None if it is public."""
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_private or not address.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class NetPolicy:
    """What a run may reach and where it may listen.

    Args:
        allow: ``HOST[:PORT]`` patterns of what outbound nodes may reach: a
            host name, ``*.example.com``, ``*`` (any host), an address
            (``[::1]`` for IPv6) or a CIDR block; no port means any port.
            Empty: nothing.
        allow_private: Loopback, link-local, private, multicast and
            reserved addresses may be reached too (an address pattern
            allows the addresses it names without this).
        allow_listen: Addresses beyond loopback a listening node may bind
            (``0.0.0.0`` or ``::`` for every interface).

    Raises:
        ValueError: A pattern or an address does not parse; the message
            names it.
    """

    allow: tuple[str, ...] = ()
    allow_private: bool = False
    allow_listen: tuple[str, ...] = ()
    _patterns: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)
    _listen: frozenset[IPAddress] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(map(_parse_pattern, self.allow)))
        listen = set()
        for text in self.allow_listen:
            address = _ip(text)
            if address is None:
                msg = f"allow_listen {text!r} is not an IP address"
                raise ValueError(msg)
            listen.add(address)
        object.__setattr__(self, "_listen", frozenset(listen))

    def check_host(self, host: str, port: int, *, what: str = "") -> None:
        """Refuse a host (name or address) and port no pattern allows.

        Raises:
            NetworkDenied: Nothing allows it; the message says what would.
        """
        host = host.lower().rstrip(".")
        where = f"{what}: " if what else ""
        if not any(p.matches_host(host, port) for p in self._patterns):
            shown = f"[{host}]" if ":" in host else host
            allowed = ", ".join(self.allow) or "nothing"
            msg = (
                f"{where}{shown}:{port} is not allowed by this server's network "
                f"policy (allowed: {allowed}); the operator can allow it with "
                f"--allow-net {shown}:{port}"
            )
            raise NetworkDenied(msg)
        address = _ip(host)
        if address is not None:
            self.check_address(address, port, what=what)

    def check_address(self, address: IPAddress, port: int, *, what: str = "") -> None:
        """Refuse a resolved address outbound nodes may not reach.

        Raises:
            NetworkDenied: The address is special (loopback, private...) and
                not allowed, or no pattern could allow it.
        """
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        where = f"{what}: " if what else ""
        if any(p.matches_address(address, port) for p in self._patterns):
            return
        kind = _special(address)
        if kind is not None and not self.allow_private:
            msg = (
                f"{where}{address} is a {kind} address, which workflows on this "
                "server may not reach (checked after DNS resolution); the "
                f"operator can allow it with --allow-net {_shown(address)}:{port} "
                "or --allow-private-net"
            )
            raise NetworkDenied(msg)
        if not any(p.host is not None for p in self._patterns):
            msg = (
                f"{where}{address}:{port} is not allowed by this server's network "
                f"policy (allowed: {', '.join(self.allow) or 'nothing'})"
            )
            raise NetworkDenied(msg)

    def check_listen(self, host: str, *, what: str = "") -> None:
        """Refuse a listening address other than loopback, unless allowed.

        Raises:
            NetworkDenied: The address is neither loopback nor allowed.
        """
        address = _ip(host)
        if address is None and host.lower() == "localhost":
            return
        if address is not None and (address.is_loopback or address in self._listen):
            return
        where = f"{what}: " if what else ""
        msg = (
            f"{where}listening on {host!r} is not allowed on this server: "
            "workflows listen on loopback (127.0.0.1) only; the operator can "
            f"allow an address with --allow-listen {host}"
        )
        raise NetworkDenied(msg)


def _shown(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


_current: ContextVar[NetPolicy | None] = ContextVar(
    "flowstream_net_policy", default=None
)


def current_policy() -> NetPolicy | None:
    """The policy of the running task, or None (a trusted run)."""
    return _current.get()


def check_url(url: str, *, what: str = "") -> None:
    """Refuse a URL the current policy does not allow; no-op without a policy.

    Network nodes call this for every URL they connect to (the config's and
    an item's): the host check by name. Addresses are checked again after
    DNS resolution when the socket connects.

    Args:
        url: An absolute ``http(s)://`` or ``ws(s)://`` URL.
        what: Who asks (``"node get"``), for the message.

    Raises:
        NetworkDenied: The URL's host or port is not allowed.
    """
    policy = _current.get()
    if policy is None:
        return
    host, port = url_host_port(url)
    policy.check_host(host, port, what=what)


def url_host_port(url: str) -> tuple[str, int]:
    """The host (lower case, no brackets) and port of an absolute URL.

    A bare ``host:port`` (a Kafka broker) is read as the URL ``//host:port``.

    Raises:
        NetworkDenied: The URL has no host, or its port is not a number.
    """
    try:
        parts = urlsplit(f"//{url}" if _HOST_PORT.fullmatch(url) else url)
        port = parts.port
    except ValueError as exc:
        msg = f"{url!r:.100}: {exc}"
        raise NetworkDenied(msg) from None
    host = parts.hostname
    if not host:
        msg = f"{url!r:.100} names no host"
        raise NetworkDenied(msg)
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return host, port


@contextlib.contextmanager
def enforce(policy: NetPolicy) -> Iterator[None]:
    """Apply ``policy`` to this task and the tasks it starts, until exit.

    Raises:
        RuntimeError: The running event loop is not asyncio's own (its
            sockets would escape the check).
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        msg = (
            f"the network policy needs asyncio's own event loop, not "
            f"{type(loop).__module__}.{type(loop).__qualname__} (which connects "
            "sockets where the policy cannot see them)"
        )
        raise RuntimeError(msg)
    _install_hook()
    token = _current.set(policy)
    try:
        yield
    finally:
        _current.reset(token)


_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.bind"})
_INET = (socket.AF_INET, socket.AF_INET6)
_hook_lock = threading.Lock()
_hook_installed = False


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            # Audit hooks cannot be removed; this one costs a set lookup per
            # audited event and does nothing outside a policy.
            sys.addaudithook(_audit)
            _hook_installed = True


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    policy = _current.get()
    if policy is None:
        return
    sock, address = args[0], args[-1]
    family = getattr(sock, "family", None)
    if family not in _INET:
        msg = (
            f"workflows on this server may use IP sockets only, not {family!r} "
            f"({address!r:.100})"
        )
        raise NetworkDenied(msg)
    host, port = str(address[0]), int(address[1])
    ip = _ip(host)
    if ip is None:  # the socket module resolves names itself: resolve first
        msg = f"{host!r:.100} is not an address; connect by address"
        raise NetworkDenied(msg)
    if event == "socket.bind":
        policy.check_listen(str(ip))
    else:
        policy.check_address(ip, port)
