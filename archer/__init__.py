"""Archer: a telephony bridge from Twilio Media Streams to Cartesia voice agents."""

__version__ = "0.1.0"
