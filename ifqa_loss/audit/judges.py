"""Judges from other families: image-quality measures that share nothing with IFQA.

``ifqa audit`` (and the restorer study) judge a result with measures the loss under test never
sees. Besides PSNR/SSIM, identity and the separately trained ``ifqa-judge``, these come from
other families of image-quality assessment, each from an installed package, computed offline:

========  ===========  ==========  ==========================================================
name      better       reference   what, from which package
========  ===========  ==========  ==========================================================
niqe      lower        no          NIQE, natural-scene statistics (basicsr, its parameters)
brisque   lower        no          BRISQUE, natural-scene statistics + SVM (``brisque``)
ms_ssim   higher       clean face  multi-scale SSIM (``piq``)
gmsd      lower        clean face  gradient-magnitude similarity deviation (``piq``)
haarpsi   higher       clean face  Haar wavelet perceptual similarity (``piq``)
vif       higher       clean face  visual information fidelity, pixel domain (``piq``)
========  ===========  ==========  ==========================================================

Every judge is called as ``judge(images, clean)`` with (B, 3, H, W) RGB in [0, 1] (``clean``
may be None for the no-reference ones) and returns a (B,) float64 tensor. The packages are the
optional extra ``judges`` (``pip install --no-build-isolation 'ifqa-loss[judges]'``); each judge
imports its package on first use, and a missing one raises an ImportError saying what to
install. None of them downloads anything: the parameters they need ship in their packages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

JudgeFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
EXTRA_HINT = "pip install --no-build-isolation 'ifqa-loss[judges]'"
GROUPS = {"piq": ("ms_ssim", "gmsd", "haarpsi", "vif")}
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # the standard five scales


@dataclass(frozen=True)
class Judge:
    """One quality measure: ``judge(images, clean) -> (B,)``, with its direction.

    ``better`` is ``"lower"`` or ``"higher"``; ``reference`` says whether it compares with the
    clean face (then ``clean`` is required).
    """

    name: str
    label: str
    better: str
    reference: bool
    package: str
    about: str
    fn: JudgeFn = field(repr=False, compare=False)

    def __call__(self, images: torch.Tensor, clean: torch.Tensor | None = None) -> torch.Tensor:
        _check(self.label, "images", images)
        if self.reference:
            if clean is None:
                raise ValueError(f"{self.label} compares with the clean face: pass clean images")
            _check(self.label, "clean", clean)
            if clean.shape != images.shape:
                raise ValueError(
                    f"{self.label}: clean {tuple(clean.shape)} and images "
                    f"{tuple(images.shape)} must have the same shape"
                )
        with torch.no_grad():
            out = self.fn(images.detach().float().clamp(0, 1), clean)
        return out.detach().double().cpu().reshape(len(images))

    def describe(self) -> dict[str, object]:
        """What audit.json records about the judge."""
        return describe(self.name)


def _check(label: str, what: str, x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{label}: {what} must be (B, 3, H, W) RGB in [0, 1], got {shape}")


def _require(package: str, label: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(
            f"{label} needs {package}: {EXTRA_HINT}. ({type(e).__name__}: {e})"
        ) from e


# --- the judges' computations (each imports its package when built) ---------------------------


def _niqe() -> JudgeFn:
    from ..integrations.niqe import load, niqe

    load()  # imports basicsr now, or raises the install hint
    return lambda images, clean: niqe(images)


def _brisque() -> JudgeFn:
    pkg = _require("brisque", "BRISQUE")

    class _Brisque(pkg.BRISQUE):
        # brisque 0.2.0 keeps some features as 1-element arrays, which float() refuses on
        # NumPy >= 2.4 ("only 0-dimensional arrays can be converted"): pass plain floats.
        def scale_features(self, features):
            return super().scale_features([np.asarray(f, np.float64).item() for f in features])

    model = _Brisque(url=False)  # the SVM and scaling that ship with the package

    def fn(images: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
        u8 = (images * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return torch.tensor([float(model.score(np.ascontiguousarray(a))) for a in u8])

    return fn


def _ms_ssim() -> JudgeFn:
    piq = _require("piq", "MS-SSIM")

    def fn(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        # As many of the five scales as the image holds (11 px window: 161 px for all five,
        # four at 128 px), their standard weights renormalised by piq.
        side = min(images.shape[-2:])
        levels = max(1, min(5, int(np.floor(np.log2((side - 1) / 10))) + 1))
        w = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=images.dtype, device=images.device)
        return piq.multi_scale_ssim(
            images, clean.float(), data_range=1.0, reduction="none", scale_weights=w
        )

    return fn


def _piq(func: str, label: str) -> Callable[[], JudgeFn]:
    def build() -> JudgeFn:
        f = getattr(_require("piq", label), func)
        return lambda images, clean: f(images, clean.float(), data_range=1.0, reduction="none")

    return build


_REGISTRY: dict[str, tuple[str, str, bool, str, str, Callable[[], JudgeFn]]] = {
    # name: (label, better, reference, package, about, builder)
    "niqe": ("NIQE", "lower", False, "basicsr", "natural-scene statistics", _niqe),
    "brisque": ("BRISQUE", "lower", False, "brisque", "scene statistics + SVM", _brisque),
    "ms_ssim": ("MS-SSIM", "higher", True, "piq", "multi-scale structure", _ms_ssim),
    "gmsd": ("GMSD", "lower", True, "piq", "gradient deviation", _piq("gmsd", "GMSD")),
    "haarpsi": ("HaarPSI", "higher", True, "piq", "Haar wavelets", _piq("haarpsi", "HaarPSI")),
    "vif": ("VIF", "higher", True, "piq", "information fidelity", _piq("vif_p", "VIF")),
}
JUDGE_NAMES = tuple(_REGISTRY)
_BUILT: dict[str, Judge] = {}


def get_judge(name: str) -> Judge:
    """The judge called ``name`` (see :data:`JUDGE_NAMES`), its package imported.

    Raises:
        ValueError: unknown name.
        ImportError: its package is not installed (the message says what to install).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGE_NAMES)}, or 'piq'")
    if name not in _BUILT:
        label, better, reference, package, about, build = _REGISTRY[name]
        _BUILT[name] = Judge(name, label, better, reference, package, about, build())
    return _BUILT[name]


def describe(name: str) -> dict[str, object]:
    """Label, direction, reference and package of a judge, without importing its package."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGE_NAMES)}")
    label, better, reference, package, about, _ = _REGISTRY[name]
    return {
        "label": label,
        "better": better,
        "reference": reference,
        "package": package,
        "about": about,
    }


def expand(names: str | Sequence[str]) -> list[str]:
    """``"niqe,piq"`` or ``["niqe", "piq"]`` -> judge names, groups expanded, order kept."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (s.strip().lower().replace("-", "_") for s in items):
        for n in GROUPS.get(item, (item,)):
            if n not in _REGISTRY:
                raise ValueError(
                    f"unknown judge {item!r}; known: {', '.join(JUDGE_NAMES)}, 'piq' (its four), "
                    "'auto' (all installed) or 'none'"
                )
            if n not in out:
                out.append(n)
    return out


def resolve(spec: str | Sequence[str] | None = "auto") -> tuple[list[Judge], list[str]]:
    """Judges for a ``--judges`` value, and notes on those left out.

    ``"auto"`` or None: every judge whose package is installed (the notes say which are missing
    and how to install them); ``"none"``: no judge; otherwise names or groups, each of which
    must be installed (ImportError otherwise).
    """
    if spec is None or spec == "auto":
        judges, missing = [], {}
        for n in JUDGE_NAMES:
            try:
                judges.append(get_judge(n))
            except ImportError:
                missing.setdefault(_REGISTRY[n][3], []).append(n)
        notes = [f"{', '.join(v)}: needs {k} ({EXTRA_HINT})" for k, v in missing.items()]
        return judges, notes
    if spec == "none" or spec == []:
        return [], []
    return [get_judge(n) for n in expand(spec)], []


def available() -> list[str]:
    """Names of the judges whose package is installed and works here."""
    return [j.name for j in resolve("auto")[0]]
