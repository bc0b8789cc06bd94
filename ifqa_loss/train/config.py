"""Training configuration: dataclasses loaded from YAML, with dotted command-line overrides.

A YAML file has the sections ``model``, ``generator``, ``data``, ``degradation``, ``loss``,
``optim`` and ``run``; every key is optional and unknown keys are errors (so a typo never silently
falls back to a default). See ``ifqa_loss/train/configs/*.yaml`` and ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FACES_ENV = "IFQA_FACES_DIR"
# The folder holding the ifqa_loss package: in a source checkout, the repository. A relative
# data.root is taken from there, so that the packaged configs' ../shared/data/faces is found
# from any current folder; installed as a wheel (no checkout), from the current folder.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def relative_roots_base() -> Path:
    """Where a relative ``data.root`` starts: the source checkout, else the current folder."""
    if (PACKAGE_PARENT / "setup.cfg").is_file() and (PACKAGE_PARENT / "ifqa_loss").is_dir():
        return PACKAGE_PARENT
    return Path.cwd()


@dataclass
class NetworkSpec:
    """The discriminator: ``IFQACNN(width, native_size)``; width 1.0 is the published network."""

    width: float = 0.25
    native_size: int = 256
    # Start from these weights instead of a random initialisation (fine-tuning; our addition):
    # a registered model name (e.g. ``ifqa-lite``) or a safetensors/checkpoint path. Ignored
    # when a run resumes from its own checkpoint. Empty: random initialisation.
    init: str = ""


@dataclass
class GeneratorConfig:
    """The small restoration generator (see :mod:`ifqa_loss.train.generator`)."""

    channels: int = 32
    blocks: int = 4
    unshuffle: int = 2


@dataclass
class DataConfig:
    """Where the clean aligned faces are and which of them are held out.

    ``root`` is resolved in this order: the ``--data-root`` option, ``$IFQA_FACES_DIR``, this
    value (a relative one is taken from the repository in a source checkout, else from the
    current directory: see ``relative_roots_base``). ``train`` holds glob patterns
    relative to the root; ``val`` holds held-out files relative to the root, which are removed
    from the training set even when a pattern matches them. ``exclude`` holds glob patterns of
    files used for neither (e.g. paintings in a folder of photographs).
    """

    root: str = "../shared/data/faces"
    train: list[str] = field(default_factory=lambda: ["**/*.png", "**/*.jpg"])
    val: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    base_size: int = 512
    hflip: bool = True
    # Geometric and colour augmentation of the clean face before it is degraded (our addition,
    # against memorising the few training faces): with probability ``aug_prob`` a random
    # similarity (scale in ``aug_scale``, rotation up to ``aug_rotate`` degrees, shift up to
    # ``aug_shift`` of the size; bicubic, reflected borders) and brightness / contrast /
    # saturation factors in 1 +- ``aug_color``.
    aug_prob: float = 0.0
    aug_scale: list[float] = field(default_factory=lambda: [0.92, 1.08])
    aug_rotate: float = 5.0
    aug_shift: float = 0.03
    aug_color: float = 0.1
    num_workers: int = 0
    # Whole photographs (glob patterns relative to the root) whose corners are cut as non-face
    # fakes when ``degradation.degenerate_prob`` is on (our addition). Empty: non-face fakes
    # are the face's own tiles shuffled.
    backgrounds: list[str] = field(default_factory=list)
    # Whole photographs (glob patterns relative to the root) whose faces dlib finds and aligns
    # to the FFHQ crop at ``base_size`` as further clean training faces (our addition; the
    # ``[align]`` extra). A face smaller than ``base_size / photo_max_upscale`` px in its
    # photograph is skipped: enlarged that much it would be a blurred face labelled real; so
    # is a detection under ``photo_min_confidence`` (dlib's HOG score: marginal detections
    # are where its false positives lie). Held-out and excluded files are never read.
    photos: list[str] = field(default_factory=list)
    photo_max_upscale: float = 2.0
    photo_min_confidence: float = 0.3


@dataclass
class DegradationConfig:
    """The synthetic degradation of clean faces (GFPGAN's FFHQ options by default).

    Each operation runs with its own probability; GFPGAN's order is used: blur, downsample,
    noise, JPEG, upsample back. ``sizes``/``size_probs``: the resolution at which a sample is
    degraded (the clean ``base_size`` face is resized there first); the result is then resized to
    the model's native size with the metric's antialiased bilinear resize. ``min_ops``: resample
    until at least this many operations are active. ``single_op_prob``: share of samples that get
    exactly one operation (blur, down-up, noise or JPEG, drawn with ``single_op_weights``) at the
    full degradation size instead of the chain (our addition; GFPGAN's default is 0).
    ``max_psnr``: redraw the degradation (up to ``max_tries`` times) while the degraded face is
    closer than this PSNR (dB) to the clean one at the native size, so that nearly invisible
    degradations are not labelled fake (our addition; None turns it off).
    """

    sizes: list[int] = field(default_factory=lambda: [512])
    size_probs: list[float] | None = None
    blur_prob: float = 1.0
    blur_kernel_size: int = 41
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 10.0])
    blur_sigma_log: bool = False
    blur_aniso_prob: float = 0.5
    down_prob: float = 1.0
    down_factor: list[float] = field(default_factory=lambda: [0.8, 8.0])
    down_factor_log: bool = False
    down_interp: list[str] = field(default_factory=lambda: ["linear"])
    up_interp: list[str] = field(default_factory=lambda: ["linear"])
    noise_prob: float = 1.0
    noise_sigma: list[float] = field(default_factory=lambda: [0.0, 20.0])
    gray_noise_prob: float = 0.0
    jpeg_prob: float = 1.0
    jpeg_quality: list[float] = field(default_factory=lambda: [60.0, 100.0])
    color_jitter_prob: float = 0.3
    color_jitter_shift: float = 20.0
    gray_prob: float = 0.01
    min_ops: int = 0
    single_op_prob: float = 0.0
    max_psnr: float | None = None
    max_tries: int = 8
    single_op_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    quantize: bool = True
    # Over-restoration artefacts as fakes (our addition; see ifqa_loss/train/artefacts.py): with
    # probability ``artefact_prob`` a sample's fake is one artefact of the clean face at the
    # degradation size instead of the degradation chain (max_psnr redraws apply to it too), so
    # that halos, ringing, colour casts, plastic skin and checkerboards do not score as real.
    # ``artefact_weights``: relative odds of unsharp, ringing, cast, smooth, checker. Strengths:
    # unsharp mask sigma (px) and amount; ideal low-pass cutoff (fraction of Nyquist); cast
    # magnitude per channel (1/255, random sign per channel, random dark weighting); bilateral
    # sigma_color (intensity in [0, 1]) and sigma_space (px); checkerboard amplitude (1/255) and
    # period (px, integers, both ends included). 0 (the default) leaves the stream unchanged.
    artefact_prob: float = 0.0
    artefact_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0])
    unsharp_sigma: list[float] = field(default_factory=lambda: [1.0, 4.0])
    unsharp_amount: list[float] = field(default_factory=lambda: [0.5, 3.0])
    ringing_cutoff: list[float] = field(default_factory=lambda: [0.15, 0.5])
    cast_shift: list[float] = field(default_factory=lambda: [4.0, 20.0])
    smooth_sigma_color: list[float] = field(default_factory=lambda: [0.05, 0.2])
    smooth_sigma_space: list[float] = field(default_factory=lambda: [2.0, 8.0])
    checker_amplitude: list[float] = field(default_factory=lambda: [2.0, 8.0])
    checker_period: list[int] = field(default_factory=lambda: [1, 2])
    # Degenerate images as fakes (our addition; see ifqa_loss/train/degenerate.py): with
    # probability ``degenerate_prob`` a sample's fake is not a face at all (a constant colour, a
    # near-constant image, a gradient, noise or a pattern, a non-face crop of a photograph from
    # ``data.backgrounds``, a heavily blurred or a posterised face), so that a black square
    # does not score as real. ``degenerate_weights``: relative odds of constant, near_constant,
    # gradient, noise, nonface, smooth, posterise. 0 (the default) leaves the stream unchanged.
    degenerate_prob: float = 0.0
    degenerate_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    )


@dataclass
class LossConfig:
    """Loss weights.

    ``region_weights``: the per-pixel weight inside each region (1 outside), on every BCE and
    on the reconstruction loss, by the rule of :mod:`ifqa_loss.regions` (facial primary regions
    count more). ``mix_fraction``: share of the batch
    that also yields a region-swapped (CutMix) sample; ``mix_regions`` are swapped as a random
    non-empty subset, binarised at ``mix_threshold``. ``fake_degraded_fraction``: share of the
    fake samples that are the degraded input itself rather than the generator's output (our
    addition: the metric must rank raw degradations low too).
    """

    recon_weight: float = 1.0
    adv_weight: float = 0.05
    region_weights: dict[str, float] = field(
        default_factory=lambda: {"eyes": 3.0, "nose": 2.0, "mouth": 3.0}
    )
    mix_fraction: float = 0.5
    mix_weight: float = 1.0
    # The region mix joins after this fraction of the steps (our addition; 0 = from the start):
    # per-pixel swap labels slow a discriminator that cannot yet tell the families apart.
    mix_start: float = 0.0
    mix_regions: list[str] = field(
        default_factory=lambda: ["left_eye", "right_eye", "nose", "mouth"]
    )
    mix_threshold: float = 0.25
    mix_softness: float = 1.0
    consistency_weight: float = 0.0
    # Paired ranking term (our addition; 0 = off): every fake is made from the real face in the
    # same batch slot, so ``softplus(s(fake) - s(real))`` with ``s`` the region-weighted mean
    # logit asks the score itself to rank each face above its own degraded version. This is
    # what the metric is used for, and the pair cancels the face-to-face content that
    # per-pixel labels alone have to fight.
    rank_weight: float = 0.0
    # The same inside the region-mixed samples (ours; needs mix_fraction > 0): the swapped-in
    # fake regions must score below the real face on the same pixels, the swapped-in real
    # regions above the fake. It asks for a map that follows the swap without the per-pixel
    # BCE on the mix (mix_weight), which held the discriminator near chance in our CPU runs.
    mix_rank_weight: float = 0.0
    fake_degraded_fraction: float = 0.5
    landmark_jitter: float = 0.02
    # Visibility weighting of fake pixels (our addition; 0 = off): a fake pixel's BCE weight is
    # clamp(local mean |fake - real| / tau, floor, 1), so pixels a degradation left unchanged
    # do not count as fake at full weight.
    fake_visibility_tau: float = 0.0
    fake_visibility_floor: float = 0.05
    # Rescale each fake image's visibility weights to mean 1, so that a blur (visible at edges
    # only) teaches as much as noise (visible everywhere).
    fake_visibility_normalize: bool = False
    # Hardening against what optimises the discriminator (our addition; ``hardening.py``).
    # Adversarial fakes: ``pgd_fraction`` of the fake slots (the last ones) are replaced by
    # ``pgd_steps`` signed-gradient steps of ``pgd_step_size``/255 that raise the current
    # discriminator's region-weighted mean logit, started from the degraded face or, for a
    # share ``pgd_from_real`` of them, from the real face. They join after ``pgd_start`` of the
    # steps (a fresh discriminator has no useful gradient to attack).
    pgd_fraction: float = 0.0
    pgd_steps: int = 5
    pgd_step_size: float = 2.0
    pgd_from_real: float = 0.5
    pgd_start: float = 0.0
    # Persistent attacks: keep up to ``pgd_buffer`` attacked (real, fake) pairs; each attacked
    # slot continues a stored pair with probability ``pgd_persist`` (0: always fresh), so
    # attacks grow longer than pgd_steps over training, against the discriminator of the day.
    pgd_buffer: int = 0
    pgd_persist: float = 0.0
    # R1 (input-gradient) penalty on real faces, ``r1_weight * H*W * |grad_x s(x)|^2``, added
    # every ``r1_every`` steps with its weight multiplied by ``r1_every`` (lazy regularisation).
    # Single-process only.
    r1_weight: float = 0.0
    r1_every: int = 4
    # Gradient alignment on the fakes (ours): ``align_weight * (1 - cos(grad_x s(fake), real -
    # fake))`` every ``align_every`` steps (weight scaled by it), so that raising the score moves
    # a fake towards its clean face. Single-process only.
    align_weight: float = 0.0
    align_every: int = 2


@dataclass
class OptimConfig:
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    betas_d: list[float] = field(default_factory=lambda: [0.5, 0.999])
    betas_g: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    grad_clip: float | None = None
    # Linear decay of both learning rates to ``lr * final_lr_scale`` over the last
    # ``decay_fraction`` of the steps (0: constant).
    decay_fraction: float = 0.0
    final_lr_scale: float = 0.1
    # Exponential moving average of the discriminator's weights (0: off). When on, validation
    # and the exported model use the averaged weights (our addition: it smooths the
    # step-to-step swings of a short adversarial run).
    ema_decay: float = 0.0


@dataclass
class RunConfig:
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 50
    progress: bool = True
    export_dtype: str = "float32"
    # Curriculum (our addition, for CPUs): the first ``crop_fraction`` of the steps train on
    # random ``crop_size`` crops of the native-size samples (about 4x cheaper at half the side),
    # the rest on whole images. 0 turns it off.
    crop_size: int = 0
    crop_fraction: float = 0.0


@dataclass
class TrainConfig:
    model: NetworkSpec = field(default_factory=NetworkSpec)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def faces_root(self, override: str | os.PathLike | None = None) -> Path:
        """The faces folder: ``override``, else ``$IFQA_FACES_DIR``, else ``data.root`` (a
        relative ``data.root`` from :func:`relative_roots_base`)."""
        if override or os.environ.get(FACES_ENV):
            return Path(override or os.environ[FACES_ENV]).expanduser()
        root = Path(self.data.root).expanduser()
        return root if root.is_absolute() else relative_roots_base() / root


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in config section {where!r}; known keys: {sorted(known)}"
        )
    kwargs = {}
    for k, v in values.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            kwargs[k] = _build(type(default), v or {}, f"{where}.{k}" if where else k)
        else:
            kwargs[k] = _coerce(default, v, f"{where}.{k}" if where else k)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any] | None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested mapping (missing keys take their defaults)."""
    cfg = _build(TrainConfig, values or {}, "")
    validate_config(cfg)
    return cfg


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "2e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Numbers written as strings (``"2e-3"``) become floats where the default is a float."""
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"config value {where} must be a number, got {value!r}") from None
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(text)
    return values


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply dotted overrides.

    A bare name such as ``lite_cpu`` is looked up among the packaged configs.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and (CONFIG_DIR / f"{path}.yaml").is_file():
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.is_file():
            packaged = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"config file not found: {path} (packaged configs: {packaged})")
        with open(p, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    return config_from_dict(apply_overrides(values, list(overrides or [])))


def _check_range(name: str, r: list[float], lo: float | None = None) -> None:
    if len(r) != 2 or not r[0] <= r[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {r}")
    if lo is not None and r[0] < lo:
        raise ValueError(f"{name} must not go below {lo}, got {r}")


def validate_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first inconsistent setting."""
    if cfg.model.native_size % 32:
        raise ValueError(f"model.native_size must be a multiple of 32, got {cfg.model.native_size}")
    if not cfg.model.width > 0:
        raise ValueError(f"model.width must be > 0, got {cfg.model.width}")
    d = cfg.degradation
    if d.size_probs is not None and len(d.size_probs) != len(d.sizes):
        raise ValueError("degradation.size_probs must have one entry per degradation.sizes entry")
    if any(s > cfg.data.base_size for s in d.sizes):
        raise ValueError(f"degradation.sizes {d.sizes} must not exceed data.base_size")
    _check_range("degradation.blur_sigma", d.blur_sigma, 0.0)
    _check_range("degradation.down_factor", d.down_factor, 0.1)
    _check_range("degradation.noise_sigma", d.noise_sigma, 0.0)
    _check_range("degradation.jpeg_quality", d.jpeg_quality, 1.0)
    if d.jpeg_quality[1] > 100:
        raise ValueError(f"degradation.jpeg_quality must be <= 100, got {d.jpeg_quality}")
    if d.blur_kernel_size % 2 == 0:
        raise ValueError(f"degradation.blur_kernel_size must be odd, got {d.blur_kernel_size}")
    if not 0.0 <= d.single_op_prob <= 1.0:
        raise ValueError(f"degradation.single_op_prob must be in [0, 1], got {d.single_op_prob}")
    if (
        len(d.single_op_weights) != 4
        or min(d.single_op_weights) < 0
        or not sum(d.single_op_weights)
    ):
        raise ValueError("degradation.single_op_weights must be 4 non-negative numbers, not all 0")
    if d.min_ops > 4:
        raise ValueError(f"degradation.min_ops must be <= 4, got {d.min_ops}")
    if not 0.0 <= d.degenerate_prob <= 1.0:
        raise ValueError(f"degradation.degenerate_prob must be in [0, 1], got {d.degenerate_prob}")
    w = d.degenerate_weights
    if len(w) != 7 or min(w) < 0 or not sum(w):
        raise ValueError(
            "degradation.degenerate_weights must be 7 non-negative numbers (constant,"
            " near_constant, gradient, noise, nonface, smooth, posterise), not all 0,"
            f" got {w}"
        )
    if not 0.0 <= d.artefact_prob <= 1.0:
        raise ValueError(f"degradation.artefact_prob must be in [0, 1], got {d.artefact_prob}")
    if len(d.artefact_weights) != 5 or min(d.artefact_weights) < 0 or not sum(d.artefact_weights):
        raise ValueError(
            "degradation.artefact_weights must be 5 non-negative numbers (unsharp, ringing, cast,"
            f" smooth, checker), not all 0, got {d.artefact_weights}"
        )
    _check_range("degradation.unsharp_sigma", d.unsharp_sigma, 0.0)
    _check_range("degradation.unsharp_amount", d.unsharp_amount, 0.0)
    _check_range("degradation.ringing_cutoff", d.ringing_cutoff, 0.0)
    _check_range("degradation.cast_shift", d.cast_shift, 0.0)
    _check_range("degradation.smooth_sigma_color", d.smooth_sigma_color, 0.0)
    _check_range("degradation.smooth_sigma_space", d.smooth_sigma_space, 0.0)
    _check_range("degradation.checker_amplitude", d.checker_amplitude, 0.0)
    _check_range("degradation.checker_period", d.checker_period, 1)
    if any(int(v) != v for v in d.checker_period):
        raise ValueError(f"degradation.checker_period must be whole pixels, got {d.checker_period}")
    lo = cfg.loss
    if not 0.0 <= lo.fake_degraded_fraction <= 1.0:
        raise ValueError("loss.fake_degraded_fraction must be in [0, 1]")
    if not 0.0 <= lo.mix_fraction <= 1.0:
        raise ValueError("loss.mix_fraction must be in [0, 1]")
    if not 0.0 <= lo.mix_start < 1.0:
        raise ValueError(f"loss.mix_start must be in [0, 1), got {lo.mix_start}")
    _validate_hardening(lo)
    r = cfg.run
    if r.steps < 0 or r.batch_size < 1:
        raise ValueError(
            f"run.steps must be >= 0 and run.batch_size >= 1, got {r.steps}, {r.batch_size}"
        )
    if min(r.log_every, r.ckpt_every) < 1:
        raise ValueError("run.log_every and run.ckpt_every must be >= 1")
    if r.crop_size and (r.crop_size % 32 or r.crop_size >= cfg.model.native_size):
        raise ValueError(
            f"run.crop_size must be a multiple of 32 below model.native_size, got {r.crop_size}"
        )
    if not 0.0 <= r.crop_fraction <= 1.0:
        raise ValueError(f"run.crop_fraction must be in [0, 1], got {r.crop_fraction}")
    if r.export_dtype not in ("float32", "float16"):
        raise ValueError(f"run.export_dtype must be float32 or float16, got {r.export_dtype!r}")


def _validate_hardening(lo: LossConfig) -> None:
    if lo.pgd_buffer < 0:
        raise ValueError(f"loss.pgd_buffer must be >= 0, got {lo.pgd_buffer}")
    for name in ("pgd_fraction", "pgd_from_real", "pgd_persist"):
        v = getattr(lo, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"loss.{name} must be in [0, 1], got {v}")
    if not 0.0 <= lo.pgd_start < 1.0:
        raise ValueError(f"loss.pgd_start must be in [0, 1), got {lo.pgd_start}")
    if lo.pgd_fraction and (lo.pgd_steps < 1 or not lo.pgd_step_size > 0):
        raise ValueError(
            "with loss.pgd_fraction > 0, loss.pgd_steps must be >= 1 and loss.pgd_step_size "
            f"> 0 (1/255 units), got {lo.pgd_steps} and {lo.pgd_step_size}"
        )
    if lo.align_weight < 0 or lo.align_every < 1:
        raise ValueError(
            f"loss.align_weight must be >= 0 and loss.align_every >= 1, got {lo.align_weight}, "
            f"{lo.align_every}"
        )
    if lo.r1_weight < 0 or lo.r1_every < 1:
        raise ValueError(
            f"loss.r1_weight must be >= 0 and loss.r1_every >= 1, got {lo.r1_weight}, {lo.r1_every}"
        )
