"""Emulators of Archer's peers (Twilio, Cartesia) for tests, the demo and benchmarks."""
