"""Locate the read-only ``shared/`` folder (real faces, peer models) that sits beside the repo."""

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir():
    """``$KERASFACE_SHARED`` if set, else ``../shared`` beside the repository; None when absent."""
    candidates = [os.environ.get("KERASFACE_SHARED"), _REPO_ROOT.parent / "shared"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def require_shared(relative_path):
    """Path to ``shared/<relative_path>``, or skip the calling test with the reason."""
    import pytest

    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent (real faces and peer models live there)")
    path = root / relative_path
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path
