"""Wrapping a method of another package once (idempotent monkey-patching)."""

from __future__ import annotations

from typing import Any

# Set on every wrapper this package installs, so a second registration changes nothing.
PATCH_FLAG = "_ifqa_loss_log_hook"


def patch(owner: Any, attr: str, make: Any) -> bool:
    """Replace ``owner.attr`` by ``make(original)`` unless already patched; True if it did."""
    original = getattr(owner, attr)
    if getattr(original, PATCH_FLAG, False):
        return False
    wrapper = make(original)
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original
    setattr(wrapper, PATCH_FLAG, True)
    setattr(owner, attr, wrapper)
    return True
