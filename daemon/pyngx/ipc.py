"""Placeholder: the ipc API lands with its issue."""
from __future__ import annotations
