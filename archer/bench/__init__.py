"""``archer bench``: many emulated calls through a real Archer process, measured against a floor.

Layer: bench (tools for measuring, never imported by the server). ``peers`` speaks Twilio and
Cartesia with tagged frames, ``floor`` is the thinnest relay on the same stack, ``procstat``
reads a server's CPU and memory from ``/proc``, and ``run`` puts them together and reports.
"""
