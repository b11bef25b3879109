"""How we decide: routing, one download per blob, and the cache rules."""
