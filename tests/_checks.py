"""Checks that integration tests apply to what a server or the library says, kept apart so
that unit tests can feed them faulty answers and see them fail.

- ``secret_leaks``: where a secret shows up in an HTTP answer (test_security).
- ``driver_was_refused``: what the wrong-token driver prints when Ray turns it away.
- ``listening_addresses``: the local addresses the kernel has listening on a TCP port, from
  ``/proc/net/tcp`` and ``/proc/net/tcp6``; ``loopback_only`` judges them.
- ``names_what_was_given``: whether an error message of ``deployment()`` quotes something
  specific the user gave (test_config_fuzz).
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

# --- test_security --------------------------------------------------------------------------


def secret_leaks(answer: httpx.Response, secret: str) -> list[str]:
    """The parts of ``answer`` (``"body"``, ``"headers"``) that carry ``secret``."""
    parts = {"body": answer.text, "headers": str(answer.headers)}
    return [part for part, text in parts.items() if secret in text]


#: What the wrong-token driver prints when ``ray.init`` raises: "REFUSED <exception type>".
REFUSED = re.compile(r"^REFUSED \w+$", re.MULTILINE)


def driver_was_refused(stdout: str) -> bool:
    """Whether the wrong-token driver reported that Ray turned it away (and did not crash
    or connect)."""
    return REFUSED.search(stdout) is not None and "CONNECTED" not in stdout


#: The TCP state ``/proc/net/tcp*`` gives a listening socket (``TCP_LISTEN``).
_LISTEN = "0A"


def _address(hex_address: str) -> str:
    """An address as ``/proc/net/tcp*`` prints it (each 32-bit word in host byte order)."""
    words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
    return str(ipaddress.ip_address(struct.pack(f"={len(words)}I", *words)))


def parse_listeners(table: str, port: int) -> list[str]:
    """The local addresses of the sockets listening on ``port`` in one ``/proc/net/tcp*``
    table (its header line first, as the kernel writes it)."""
    addresses = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        hex_address, hex_port = local.split(":")
        if state == _LISTEN and int(hex_port, 16) == port:
            addresses.append(_address(hex_address))
    return addresses


def listening_addresses(port: int) -> list[str]:
    """Every local address a socket of this network namespace listens on ``port`` with."""
    addresses = []
    for name in ("tcp", "tcp6"):
        table = pathlib.Path("/proc/net", name)
        if table.exists():  # no tcp6 without IPv6
            addresses += parse_listeners(table.read_text(), port)
    return addresses


def loopback_only(addresses: list[str]) -> bool:
    """Whether there is a listener and each is bound to 127.0.0.1 (nothing reachable from
    another machine: not 0.0.0.0, ::, or an interface's address)."""
    return bool(addresses) and all(address == "127.0.0.1" for address in addresses)


# --- test_config_fuzz -----------------------------------------------------------------------

#: Where a message goes on to list what is allowed or to suggest a spelling: the library's
#: words (and Ray's), which name options and runners whether or not the user gave them.
_HINTS = re.compile(
    r" Did you mean |Allowed options: |Runners: |Services: |Its dependency services: "
    r"|Its batchable methods: |Batchable methods of "
)


def _values(value: Any) -> Iterator[Any]:
    """Every value inside an argument, containers and leaves, the argument itself first."""
    yield value
    items = value.values() if isinstance(value, Mapping) else value
    if isinstance(value, Mapping | list | tuple):
        for item in items:
            yield from _values(item)


def _keys(value: Any) -> Iterator[str]:
    """Every key of every mapping inside an argument."""
    for node in _values(value):
        if isinstance(node, Mapping):
            yield from map(str, node)


def _quotes_value(said: str, value: Any) -> bool:
    """Whether ``said`` quotes ``value`` as the library does: a string in its repr form
    (quotes included), anything else as ``not <repr>`` or pydantic's ``input_value=<repr>``."""
    text = repr(value)
    if isinstance(value, str):
        return text in said
    return re.search(rf"(?:\bnot |=){re.escape(text)}(?![\w]|\.\d)", said) is not None


def _names_key(said: str, key: str) -> bool:
    """Whether ``said`` names ``key``: quoted (``'num_replica'``) or as the identifier it
    is (``num_replicas of runner 'iris_clf' ...``)."""
    if repr(key) in said:
        return True
    return bool(key) and re.search(rf"(?<![\w']){re.escape(key)}(?![\w'])", said) is not None


def names_what_was_given(message: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether an error ``message`` of ``deployment(target, **kwargs)`` names the culprit:
    it quotes a key or a value the user gave inside an argument, or, for an argument that is
    not even a mapping, names that argument together with its type.

    Argument names alone do not count (every call gives them), nor type names alone, nor the
    lists of allowed options and runners the library appends.
    """
    said = _HINTS.split(message, maxsplit=1)[0]
    for argument, value in kwargs.items():
        if value is None:
            continue
        if not isinstance(value, Mapping):
            kind = type(value).__name__
            if re.search(rf"\b{argument}\b", said) and re.search(rf"\b{kind}\b", said):
                return True
        if any(_names_key(said, key) for key in _keys(value)):
            return True
        if any(_quotes_value(said, node) for node in _values(value)):
            return True
    return False
