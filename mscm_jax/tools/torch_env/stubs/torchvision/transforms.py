"""Stub: see ../README.txt. Exposes no transforms."""
