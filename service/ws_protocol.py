"""uvicorn's websocket protocol, with a way for the live tail to write a frame at once,
and a smaller permessage-deflate compressor per socket.

Through ASGI, each frame a socket sends is a wake-up of that socket's task and an
`await` through Starlette's and uvicorn's send: at a thousand watchers of one
thread that was most of the web process's work per delta, beside the write
itself. This protocol puts `send_text_now` in the connection's ASGI scope
(extension SEND_NOW): a plain call that writes a text frame at once, or writes
nothing and says so when it cannot (the transport's buffer is full, or the
socket is closing); the caller then goes the ASGI way, which waits.

Served by another server (or in tests through the ASGI client) the extension is
absent and every frame goes through ASGI, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

SEND_NOW = "slipstream.send_text_now"
"""The scope extension: a callable (text) -> bool, True once the frame is written."""

SendNow = Callable[[str], bool]
DEFLATE_WINDOW_BITS = 11
DEFLATE_MEM_LEVEL = 3


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # uvicorn's compressor has a 4 KiB window and memLevel 5: ~32 KiB a socket,
            # which for a thousand sockets of one thread no cache holds, and compressing
            # a frame cost the web process about as much as writing it. A delta's frame
            # (~250-400 bytes) compresses mostly against the frame before it, which a
            # 2 KiB window holds: compressing the same delta frames for 1,000 sockets in
            # turn takes 8.4 us a frame instead of 12.7-17.5, for 2% more bytes (62.6 a
            # frame instead of 61.2; a 1 KiB window: 6.2-6.8 us, 4% more bytes).
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_max_window_bits=DEFLATE_WINDOW_BITS,
                        client_max_window_bits=12,  # clients send only pings: uvicorn's
                        compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][SEND_NOW] = self.send_text_now

    def send_text_now(self, text: str) -> bool:
        """Write a text frame, as the ASGI send does, if that needs no wait."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        try:
            self.conn.send_text(text.encode())
        except Exception:  # the connection's state refuses it: let the ASGI send say why
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True


def send_now_of(socket: object) -> SendNow | None:
    """The SEND_NOW of a socket's connection (a Starlette WebSocket), if its server gives one."""
    scope = getattr(socket, "scope", None)
    extensions = scope.get("extensions") if isinstance(scope, dict) else None
    found = extensions.get(SEND_NOW) if isinstance(extensions, dict) else None
    return found if callable(found) else None
