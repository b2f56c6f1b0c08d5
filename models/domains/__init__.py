"""Layer tasks: procedural worlds with exact ground truth, one module each (`logo_object.py`:
composite = object carrying a logo; `intrinsic.py`: composite = albedo x shading). What they share
lives here."""

from __future__ import annotations

import numpy as np


def check_size(size) -> None:
    """A procedural panel side: an int multiple of 16 (FLUX packs 2x2 latents of an 8x VAE) in [32, 1024]."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an int, got {size!r}")
    if size % 16 or not 32 <= size <= 1024:
        raise ValueError(f"size must be a multiple of 16 between 32 and 1024, got {size}")
