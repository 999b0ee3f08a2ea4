"""Load the REAL SGLang forward-pass-metrics publisher module by path.

The module is the file ``sglang/srt/observability/forward_pass_metrics.py`` taken
out of the sglang==0.5.23 wheel by ``scripts/test-deps.sh``. Path: env
``FPM_PUBLISHER_MODULE``, else ``<repo>/target/fpm-publisher/forward_pass_metrics.py``.

It uses ``from __future__ import annotations``, so it is registered in
``sys.modules`` before being executed (msgspec resolves the nested types through it).
Only msgspec and pyzmq are needed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

MODULE_NAME = "fpm"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PATH = os.path.join(REPO_ROOT, "target", "fpm-publisher", "forward_pass_metrics.py")


def module_path() -> str:
    return os.environ.get("FPM_PUBLISHER_MODULE") or DEFAULT_PATH


def load(path: str | None = None) -> ModuleType:
    """Return the real module, loading it once per process."""
    path = os.path.abspath(path or module_path())
    mod = sys.modules.get(MODULE_NAME)
    if mod is not None and getattr(mod, "__file__", None) == path:
        return mod
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"real FPM publisher module not found at {path}; run scripts/test-deps.sh"
        )
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(MODULE_NAME, None)
        raise
    return mod


if __name__ == "__main__":
    m = load()
    print(m.__file__, "FPM_VERSION =", m.FPM_VERSION)
