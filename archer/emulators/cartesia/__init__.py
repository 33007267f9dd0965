"""The Cartesia emulator: a scripted agent on both agent endpoints (Managed Agents and Line).

Layer: emulator. Each module has one role and imports only the ones listed before it:

- ``script``: agent scripts (``AgentScript``, its steps, ``load_agent_script``).
- ``session``: the record of one connection (``EmulatedSession``) and the agent's clips.
- ``player``: the protocol-neutral script player (``ScriptedCall``).
- ``managed``: the Managed Agents session (``ManagedCall``).
- ``line``: the Line session (``LineCall``); ``line_wire``: what it sends, written by hand.
- ``server``: the upgrade and the server (``CartesiaEmulator``, ``serve_cartesia_emulator``).

Nothing is re-exported here: import from the room that holds the name.
"""
