"""What a run computes once and reuses: frozen-backbone features, decoded images (keyed, atomic, locked)."""
