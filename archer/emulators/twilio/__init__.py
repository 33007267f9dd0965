"""The Twilio emulator: a scripted caller, Twilio's media stream and its REST API, by room.

Layer: emulator. Each module has one role and imports only the ones listed before it:

- ``outcome``: how a call ended (``CallOutcome``), call and stream SIDs.
- ``frames``: the JSON a Twilio caller sends on a stream (``CallerFrames``), from Twilio's docs.
- ``script``: caller scripts (``CallerScript``, its steps, ``load_caller_script``).
- ``playout``: Twilio's playout buffer, a pure model of what the caller hears.
- ``twiml``: reading Archer's TwiML as Twilio does (``read_voice_answer``).
- ``rest``: the REST call-update API (``TwilioRestState``, ``serve_twilio_rest``).
- ``stream``: one media stream's socket, clock and script (``StreamLeg``).
- ``caller``: the call from webhook to status callback (``EmulatedCaller``).

Nothing is re-exported here: import from the room that holds the name.
"""
