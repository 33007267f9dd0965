"""The Cartesia emulator: a scripted agent on both agent endpoints (Managed Agents and Line).

Layer: emulator. Each module has one role and imports only the ones listed before it:

- ``script``: agent scripts (``AgentScript``, its steps, ``load_agent_script``).
- ``client_messages``: what both readers share (``ClientMessageError``, typed JSON fields).
- ``managed_messages``, ``line_messages``: what the client sends, read by hand from the docs.
- ``managed_wire``: what a Managed agent sends, written by hand from the AsyncAPI document.
- ``session``: the record of one connection (``EmulatedSession``) and the agent's clips.
- ``player``: the protocol-neutral script player (``ScriptedCall``).
- ``managed``: the Managed Agents session (``ManagedCall``).
- ``line_wire``: what a Line agent sends, written by hand; ``line``: the Line session
  (``LineCall``).
- ``server``: the upgrade and the server (``CartesiaEmulator``, ``serve_cartesia_emulator``).

Nothing is re-exported here: import from the room that holds the name.
"""
