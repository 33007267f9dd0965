"""Cartesia voice agents: protocol events (pure) and the WebSocket client adapter."""
