"""The floor: the thinnest relay on Archer's stack, for ``archer bench --floor`` to compare with.

Layer: bench (a server process of its own: ``python -m archer.bench.floor``).

The same stack as Archer, nothing else: hypercorn serving a quart-trio app; the voice webhook
answers one fixed TwiML; the media route reads ``connected`` and ``start``, opens the agent's
socket with trio-websocket (``archer.websocket_client``, as Archer does), sends
``session_create``, waits for ``session_ready``, and then relays each Twilio ``media`` payload
as an ``audio_input`` and each ``audio_output`` back as a Twilio ``media`` frame. Frames are
parsed with the same JSON library as Archer's. No signatures, database, call state, transcoder,
marks, metrics or logs: whatever Archer costs above this is Archer's own.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, websocket
from quart_trio import QuartTrio

from archer.cartesia import managed
from archer.websocket_client import open_websocket_client


def floor_app(*, agent_url: str, public_host: str) -> QuartTrio:
    app = QuartTrio("archer-floor")
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="wss://{public_host}/ws/cartesia"><Parameter name="token" value="floor"/>'
        "</Stream></Connect></Response>"
    )

    @app.post("/twilio/voice")
    async def voice() -> Response:  # noqa: ASYNC124 (quart would run a sync view in a thread)
        return Response(twiml, content_type="text/xml")

    @app.websocket("/ws/cartesia")
    async def media() -> None:
        await websocket.accept()
        start: dict[str, Any] = {}
        while not start:
            frame = json.loads(await websocket.receive())
            if frame.get("event") == "start":
                start = frame["start"]
        stream_sid = start["streamSid"]
        async with open_websocket_client(agent_url) as agent:
            await agent.send_message(
                managed.session_create(
                    input_format="mulaw_8000",
                    dynamic_variables={"call_sid": start["callSid"]},
                )
            )
            await agent.get_message()  # session_ready
            media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'

            async def agent_to_twilio() -> None:
                while True:
                    event = json.loads(await agent.get_message())
                    if event.get("type") == "audio_output":
                        await websocket.send(media_prefix + event["audio"] + '"}}')

            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent_to_twilio)
                while True:
                    frame = json.loads(await websocket.receive())
                    event = frame.get("event")
                    if event == "media":
                        await agent.send_message(managed.audio_input(frame["media"]["payload"]))
                    elif event == "stop":
                        break
                nursery.cancel_scope.cancel(reason="the caller stopped the stream")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m archer.bench.floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agent-url", required=True, help="the bench agent, ws://host:port")
    parser.add_argument("--public-host", default="archer.example.com")
    args = parser.parse_args(argv)
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    app = floor_app(
        agent_url=args.agent_url + "/v1/agents/websocket/floor", public_host=args.public_host
    )
    trio.run(serve, app, config)


if __name__ == "__main__":
    main()
