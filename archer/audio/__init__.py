"""Audio: G.711 codec, resampling and tone synthesis (pure)."""
