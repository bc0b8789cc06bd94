"""The dark-outline count: new dark, steep edges inside and outside the face's regions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from dark_outlines import dark_edges


def _face() -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.full((1, 3, 64, 64), 0.6)
    regions = torch.zeros(64, 64, dtype=torch.bool)
    regions[16:32, 16:48] = True  # an "eyes" band
    return clean, regions


def test_a_dark_line_drawn_in_a_region_counts_there_only():
    clean, regions = _face()
    drawn = clean.clone()
    drawn[..., 24, 20:44] = 0.2  # a dark outline across the band
    inside, outside = dark_edges(drawn, clean, regions)
    assert float(inside) > 1.0 and float(outside) == 0.0
    moved = clean.clone()
    moved[..., 50, 20:44] = 0.2  # the same line below the band
    inside, outside = dark_edges(moved, clean, regions)
    assert float(inside) == 0.0 and float(outside) > 0.0


def test_the_clean_face_a_blur_and_a_light_line_are_not_dark_edges():
    clean, regions = _face()
    clean[..., 24, 20:44] = 0.2  # an edge the clean face has
    blurred = torch.nn.functional.avg_pool2d(clean, 3, 1, 1, count_include_pad=False)
    light = clean.clone()
    light[..., 28, 20:44] = 1.0
    for x in (clean, blurred, light):
        assert float(sum(dark_edges(x, clean, regions))) == 0.0
    uint8 = (clean * 255).round().to(torch.uint8)
    assert float(sum(dark_edges(uint8, uint8, regions))) == 0.0


def test_bad_shapes_and_masks_are_refused():
    clean, regions = _face()
    with pytest.raises(ValueError, match="one shape"):
        dark_edges(clean[..., :32], clean, regions)
    with pytest.raises(ValueError, match="boolean"):
        dark_edges(clean, clean, regions.float())
    with pytest.raises(ValueError, match="part of the image"):
        dark_edges(clean, clean, torch.zeros(64, 64, dtype=torch.bool))
