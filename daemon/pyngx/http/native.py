"""The optional C extension of the HTTP path, `pyngx.http._fast`: the module, or None.

None when it was not built (no C compiler at install) or when ``PYNGX_HTTP_PURE=1`` asks
for the Python path alone (to compare the two); `pyngx.http.protocol` and
`pyngx.request` then use their Python code for everything.
"""
from __future__ import annotations

import os
from typing import Any


def load() -> Any:
    if os.environ.get("PYNGX_HTTP_PURE") == "1":
        return None
    try:
        from pyngx.http import _fast
    except ImportError:  # pragma: no cover - the extension is optional
        return None
    return _fast
