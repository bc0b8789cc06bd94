"""Model registry: name -> how to build the network, feed it, and find its weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from .base import Discriminator
from .cnn import IFQACNN
from .vit import IFQAViT


@dataclass(frozen=True)
class ModelConfig:
    """Everything the package needs to know about one discriminator.

    Attributes:
        name: registry name (``ifqa``, ``ifqa++``, ...).
        builder: zero-argument callable returning an uninitialised network.
        native_size: side of the square input the network expects.
        interpolation: resize used for tensors and files (``bilinear`` or ``bicubic``).
        mean, std: per-channel normalisation applied to [0, 1] RGB (0.5/0.5 maps to [-1, 1]).
        file_pipeline: the original file preprocessing order: ``resize_then_normalize``
            (resize the uint8 image, then normalise) or ``normalize_then_resize``.
        weight_file: the checkpoint's file name, looked up in the weight folders.
        sha256: expected digest of ``weight_file`` (None: no published digest).
        source: where the weights come from, in words.
        drive_id: the Google Drive file id the weights are downloaded from (None: not on
            Drive). A model with a ``drive_id`` or a ``url`` is downloadable: named explicitly
            (``model="ifqa"``, ``ifqa download ifqa``), its weights are fetched into the user
            cache when no local file is found. ``$IFQA_WEIGHTS_URL`` replaces either source by
            ``<base URL>/<weight_file>``.
        url: a plain HTTP(S) URL of ``weight_file`` (None: none).
        bundled: True when the package ships the weights.
        auto_fallback: whether ``model="auto"`` may fall back to this bundled model (False for
            a model with another job, such as the audit's independent judge).
        params: approximate parameter count, for display.
    """

    name: str
    builder: Callable[[], Discriminator]
    native_size: int
    interpolation: str
    weight_file: str
    source: str
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    file_pipeline: str = "resize_then_normalize"
    sha256: str | None = None
    drive_id: str | None = None
    url: str | None = None
    bundled: bool = False
    auto_fallback: bool = True
    params: str = ""
    description: str = field(default="", compare=False)

    @property
    def downloadable(self) -> bool:
        """Whether the registry says where to download the weights from."""
        return bool(self.drive_id or self.url)

    def build(self) -> Discriminator:
        """A freshly initialised network of this architecture (no weights loaded)."""
        return self.builder()


_REGISTRY: dict[str, ModelConfig] = {}

CNN_DRIVE_ID = "1aHxF39Mdg4R2dFiF_yx8HsJHy9lJaEZP"
VIT_DRIVE_ID = "1yQ9n7oitvSQzkxwijGocpftW_SbHid7C"


def register_model(cfg: ModelConfig, *, overwrite: bool = False) -> ModelConfig:
    """Add a model configuration to the registry (``overwrite`` to replace a name)."""
    if cfg.name in _REGISTRY and not overwrite:
        raise ValueError(f"model {cfg.name!r} is already registered")
    _REGISTRY[cfg.name] = cfg
    return cfg


def get_model_config(name: str) -> ModelConfig:
    """The configuration registered under ``name``; ValueError lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_models() -> list[ModelConfig]:
    """Every registered model with its native size and where its weights come from."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


register_model(
    ModelConfig(
        name="ifqa",
        builder=IFQACNN,
        native_size=256,
        interpolation="bilinear",
        weight_file="IFQA_Metric.pth",
        source=f"official IFQA release, Google Drive file id {CNN_DRIVE_ID}",
        drive_id=CNN_DRIVE_ID,
        params="105.2M",
        description="the original IFQA CNN per-pixel U-Net discriminator (WACV 2023)",
    )
)
register_model(
    ModelConfig(
        name="ifqa++",
        builder=IFQAViT,
        native_size=224,
        interpolation="bicubic",
        weight_file="IFQA++_Metric.pth",
        file_pipeline="normalize_then_resize",
        source=f"official IFQA release, Google Drive file id {VIT_DRIVE_ID}",
        drive_id=VIT_DRIVE_ID,
        params="656.9M",
        description="the original IFQA++ discriminator: MAE ViT-H/14 without masking",
    )
)
register_model(
    ModelConfig(
        name="ifqa-lite",
        builder=partial(IFQACNN, width=0.25, native_size=256),
        native_size=256,
        interpolation="bilinear",
        weight_file="ifqa-lite.safetensors",
        source="bundled with ifqa-loss (trained by this project; see weights/MODEL_CARD.md)",
        bundled=True,
        params="6.6M",
        description="a small ifqa-architecture discriminator trained by ifqa-loss",
    )
)
register_model(
    ModelConfig(
        name="ifqa-judge",
        builder=partial(IFQACNN, width=0.25, native_size=256),
        native_size=256,
        interpolation="bilinear",
        weight_file="ifqa-judge.safetensors",
        source="bundled with ifqa-loss (the audit's independent judge; see weights/MODEL_CARD.md)",
        bundled=True,
        auto_fallback=False,
        params="6.6M",
        description="the independent judge of ifqa audit: never the loss under test",
    )
)
