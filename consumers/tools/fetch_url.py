"""The `fetch_url` tool: an HTTP GET of a text page, off unless hosts are allowed.

SLIPSTREAM_FETCH_ALLOW lists hosts: `example.com` (that host), `.example.com`
or `*.example.com` (it and its subdomains), `*` (any host). Every name is
resolved first and the connection goes to the address that was checked (no
second lookup a rebinding DNS server could answer differently). An address
that is not public (private, loopback, link-local, reserved) is refused unless
the host is named exactly in the list: `*` never reaches the cloud metadata
address or a service on this machine. Redirects are followed by hand, each hop
checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from consumers.tools.errors import ToolError
from consumers.tools.registry import tool
from slipstream.config import Settings

if TYPE_CHECKING:
    # Imported where it is used: about 100 ms, on every worker's start otherwise.
    import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]
TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/x-javascript",
    }
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


@dataclass(frozen=True)
class FetchPolicy:
    allow: frozenset[str]
    max_bytes: int = 1_000_000
    max_chars: int = 10_000  # of text returned to the model; the rest is cut, and said so
    timeout_s: float = 10.0
    max_redirects: int = 5
    transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)
    resolve: Resolver = system_resolve

    def admits(self, host: str) -> Literal["named", "pattern"] | None:
        """How the host is allowed: named exactly, or by a pattern; None when it is not."""
        host = host.lower().rstrip(".")
        if host in self.allow:
            return "named"
        for entry in self.allow:
            if entry == "*":
                return "pattern"
            suffix = entry.removeprefix("*")
            if suffix.startswith(".") and (host.endswith(suffix) or host == suffix[1:]):
                return "pattern"
        return None


_policy: FetchPolicy | None = None


def use_policy(policy: FetchPolicy | None) -> FetchPolicy | None:
    """Set the policy fetch_url runs under (None: from the environment); returns the old one."""
    global _policy
    previous, _policy = _policy, policy
    return previous


def current_policy() -> FetchPolicy:
    return _policy or FetchPolicy(allow=Settings.from_env().fetch_allow)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind in TEXT_TYPES
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )


async def _address(policy: FetchPolicy, url: httpx.URL) -> str:
    """The checked address to connect to for `url`, or a ToolError saying why not."""
    if url.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {url.scheme or 'none'!r}")
    host = url.host
    if not host:
        raise ToolError("the URL has no host")
    if not policy.allow:
        raise ToolError("fetch_url is off here: no hosts are allowed (SLIPSTREAM_FETCH_ALLOW)")
    admitted = policy.admits(host)
    if admitted is None:
        raise ToolError(f"host {host!r} is not allowed (SLIPSTREAM_FETCH_ALLOW)")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await policy.resolve(host, port)
    except OSError as exc:
        raise ToolError(f"host {host!r} could not be resolved: {exc}") from None
    if not addresses:
        raise ToolError(f"host {host!r} has no address")
    if admitted == "pattern":
        for address in addresses:
            if not is_public(address):
                raise ToolError(
                    f"host {host!r} resolves to {address}, which is not a public address; "
                    "only a host named exactly in SLIPSTREAM_FETCH_ALLOW may be"
                )
    return addresses[0]


async def _get(client: httpx.AsyncClient, policy: FetchPolicy, url: httpx.URL) -> dict[str, Any]:
    import httpx

    for _hop in range(policy.max_redirects + 1):
        address = await _address(policy, url)
        host_header = url.netloc.decode("ascii")
        pinned = httpx.Request(
            "GET",
            url.copy_with(host=address),
            headers={"Host": host_header, "Accept": "text/*, application/json"},
            extensions={"sni_hostname": url.host},
        )
        response = await client.send(pinned, stream=True)
        try:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                url = url.join(response.headers["location"])
                continue
            return await _read(policy, url, response)
        finally:
            await response.aclose()
    raise ToolError(f"more than {policy.max_redirects} redirects")


async def _read(policy: FetchPolicy, url: httpx.URL, response: httpx.Response) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    if not is_text(content_type):
        raise ToolError(f"the page is {content_type or 'of no stated type'!r}, not text")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise ToolError(f"the page is {declared} bytes, over the limit of {policy.max_bytes}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > policy.max_bytes:
            raise ToolError(f"the page is over the limit of {policy.max_bytes} bytes")
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    return {
        "url": str(url),
        "status": response.status_code,
        "content_type": content_type,
        "text": text[: policy.max_chars],
        "truncated": len(text) > policy.max_chars,
    }


async def fetch(url: str, policy: FetchPolicy) -> dict[str, Any]:
    import httpx

    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ToolError(f"not a URL: {exc}") from None
    try:
        async with (
            asyncio.timeout(policy.timeout_s),
            httpx.AsyncClient(
                transport=policy.transport,
                follow_redirects=False,
                timeout=policy.timeout_s,
                trust_env=False,  # a proxy from the environment would bypass the checks
            ) as client,
        ):
            return await _get(client, policy, target)
    except TimeoutError:
        raise ToolError(f"fetching from {target.host!r} took over {policy.timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"fetching from {target.host!r} failed: {type(exc).__name__}") from None


@tool
async def fetch_url(
    url: Annotated[str, Field(description="an http or https URL of a text page")],
) -> dict[str, Any]:
    """Fetch a web page or text document with HTTP GET (allowed hosts only) and return its
    status, content type and text (cut to a bounded length)."""
    return await fetch(url, current_policy())
