"""A minimal HTTP/1.1 client on trio streams, for emulated Twilio webhooks.

Layer: adapter (emulators only). h11 does the protocol; this module only moves bytes. One
request per connection, ``Connection: close``; enough to play Twilio posting a form.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode, urlsplit

import attrs
import h11
import trio

#: Twilio gives up on a webhook after 15 s; an emulator waiting longer would hide a bug.
WEBHOOK_TIMEOUT: Final = 15.0
_RECEIVE_CHUNK: Final = 65536


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


async def post_form(
    url: str, fields: dict[str, str], *, headers: dict[str, str] | None = None
) -> HttpResponse:
    """POST ``fields`` form-encoded to ``url`` (``http://`` only) and read the whole answer.

    Raises:
        OSError: the server could not be reached.
        trio.TooSlowError: no complete answer within ``WEBHOOK_TIMEOUT``.

    Cancellation: the connection is closed; nothing else is left behind.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"post_form speaks plain http only, not {url!r}")
    body = urlencode(fields).encode()
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    request_headers = [
        ("Host", parts.netloc),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(headers or {}).items(),
    ]
    connection = h11.Connection(h11.CLIENT)
    with trio.fail_after(WEBHOOK_TIMEOUT):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
        async with stream:
            await stream.send_all(
                connection.send(h11.Request(method="POST", target=target, headers=request_headers))
                + connection.send(h11.Data(data=body))
                + connection.send(h11.EndOfMessage())
            )
            return await _read_response(connection, stream)


async def _read_response(connection: h11.Connection, stream: trio.SocketStream) -> HttpResponse:
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(_RECEIVE_CHUNK))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {name.decode().lower(): value.decode() for name, value in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpResponse(status, headers, b"".join(chunks))
