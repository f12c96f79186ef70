"""Placeholder: the shared API lands with its issue."""
from __future__ import annotations

shared: object = None
