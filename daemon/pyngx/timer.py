"""Placeholder: the timer API lands with its issue."""
from __future__ import annotations
