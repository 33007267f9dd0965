"""Emulators of Archer's peers (Twilio, Cartesia) for tests, the demo and benchmarks.

Layer: emulator. ``twilio/`` (a scripted caller, Twilio's media stream and REST API) and
``cartesia/`` (a scripted agent on the Managed and Line endpoints) are packages with one module
per role; ``http.py`` is their small HTTP client and ``scripts/`` holds the shipped caller and
agent scripts (read through ``importlib.resources``). Emulators speak the peers' protocols from
the peers' documents; product code imports them only for ``archer demo``, ``archer emulate`` and
``archer bench``.
"""
