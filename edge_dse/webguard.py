"""The web UI answers only requests addressed to it by a name the user trusts, from its own page.

Binding 127.0.0.1 is not enough: a web page elsewhere can point a name it controls at 127.0.0.1
(DNS rebinding) and then drive the UI's API from the user's browser: add a folder, search it,
read files. Such a request arrives on the loopback socket but carries the attacker's name in
its Host header, and the attacker's page in its Origin. So every request (every route, HTTP and
websocket) must carry:

- a Host that is 127.0.0.1, localhost or [::1] (or a name the user allowed with
  --allow-remote), with the port the server listens on;
- no Origin, or the origin of a page served by this UI (an allowed name on this port): a
  browser sends Origin on every cross-origin request, so another site's page is refused.

And no uploads: the page has no upload component, while Gradio's upload route would store any
file a cross-site form posts under the temp folder.

Plain ASGI, imported only by edge_dse.app (Starlette comes with Gradio).
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# Routes that store what a client sends (Gradio's uploads); nothing on the page uses them.
REFUSED_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")


def host_name(host: str) -> str:
    """How a Host header or --host value names the host: lower case, an IPv6 address in
    brackets (as a Host header writes it)."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):  # a bare IPv6 address, as --host takes it
        host = f"[{host}]"
    return host


def split_host(value: str) -> tuple[str, int | None]:
    """("name", port) of a Host header ("localhost:7860", "[::1]:7860", "example.org");
    port None when it has none; ("", None) when it does not parse."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        name, rest = value[: end + 1], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = f":{port}" if port else ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return "", None
    return name, int(rest[1:])


class LocalOnly:
    """ASGI middleware: refuse (400/403, with a one-line reason) a request whose Host or Origin
    is not this UI's, and any upload."""

    def __init__(self, app, hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.names = frozenset(LOOPBACK_NAMES) | {host_name(h) for h in hosts}

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = {}
        for key, value in scope.get("headers") or ():
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        server = scope.get("server")
        port = server[1] if server and len(server) > 1 else None
        default_port = 443 if scope.get("scheme") in ("https", "wss") else 80
        name, host_port = split_host(headers.get("host", ""))
        if name not in self.names or (port is not None and (host_port or default_port) != port):
            return 400, (f"refused: Host {headers.get('host', '(none)')!r} is not this UI's address "
                         f"(open it at http://127.0.0.1:{port}/)")
        origin = headers.get("origin")
        if origin is not None and not self._own_origin(origin, port):
            return 403, f"refused: a request from another site's page ({origin[:200]!r})"
        if scope["type"] == "http" and scope.get("path", "").rstrip("/") in REFUSED_PATHS:
            return 403, "refused: this UI takes no uploads"
        return None

    def _own_origin(self, origin: str, port: int | None) -> bool:
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        name = host_name(parts.hostname or "")
        return parts.scheme in ("http", "https") and name in self.names and (port is None or origin_port == port)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": refused[1][:120]})
        else:
            status, reason = refused
            body = (reason + "\n").encode("utf-8")
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
