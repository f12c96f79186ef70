"""Placeholder: the shell API lands with its issue."""
from __future__ import annotations
