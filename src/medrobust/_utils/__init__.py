"""Layer 0 helpers shared by every layer: atomic I/O, validators and formatting.

Nothing here imports another part of medrobust.
"""
