"""Twilio: media-stream frames, TwiML, signatures (pure) and the adapters around them."""
