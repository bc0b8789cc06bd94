"""``IFQAMetric``: batched IFQA scoring of tensors and files, with maps and region breakdowns."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from ._holder import HoldsDiscriminator, compile_kwargs
from .align import AlignOptions
from .gate import FaceGate
from .masks import face_region_masks
from .models.registry import ModelConfig, get_model_config
from .preprocess import (
    DEFAULT_MAX_PIXELS,
    check_images,
    check_max_pixels,
    check_range,
    from_model_input,
    to_model_input,
)
from .weights import WeightsArg, bundled_gate_path, load_face_gate, resolve_model


def _resolve_gate(
    face_gate: bool | str | os.PathLike,
    net: torch.nn.Module,
    cfg: ModelConfig,
    device: torch.device,
) -> FaceGate | None:
    """The ``face_gate`` argument as a frozen gate on ``device``, or None."""
    if isinstance(face_gate, str) and face_gate == "auto":
        if not _is_bundled(net, cfg) or not bundled_gate_path().is_file():
            return None
        face_gate = True
    if face_gate is False or face_gate is None:
        return None
    if face_gate is True:
        return load_face_gate(None, device)
    if isinstance(face_gate, str | os.PathLike):
        return load_face_gate(face_gate, device)
    raise TypeError(
        f"face_gate must be 'auto', True, False or a .safetensors path, got {face_gate!r}"
    )


def _is_bundled(net: torch.nn.Module, cfg: ModelConfig) -> bool:
    """Whether ``net`` is one of the project's own models with its shipped weights (the gate
    was trained and checked for those; a user's retrained weights are scored as they are)."""
    try:
        shipped = get_model_config(cfg.name)
    except ValueError:
        return False
    if not shipped.bundled:
        return False
    origin = Path(str(getattr(net, "weights_origin", "")))
    here = bundled_gate_path().parent.resolve()
    return origin.name == shipped.weight_file and origin.resolve().parent == here


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BREAKDOWN_REGIONS = ("eyes", "nose", "mouth", "rest")


class IFQAMetric(HoldsDiscriminator):
    """IFQA face quality: the mean of the discriminator's per-pixel realness map.

    Higher is better; scores lie in [0, 1]. No gradients are computed.

    Images that are not faces: the bundled models (``ifqa-lite``, ``ifqa-judge``) multiply
    their map by the face gate (:mod:`ifqa_loss.gate`), a small network's probability that the
    input is a face photograph of any quality, colour or age. Faces keep their score (the gate
    is near 1 for them); a flat colour, noise, a wall or a posterised face scores near 0,
    where the discriminator alone may rank them above real faces (docs/robustness.md). The
    original ``ifqa`` / ``ifqa++`` are left exactly as published unless asked
    (``face_gate=True``). Near-constant
    inputs, and images the gate calls no face, are also flagged by ``score_files`` and ``ifqa
    score`` (:mod:`ifqa_loss.files.flags`, docs/robustness.md).

    Args:
        model: ``"auto"``, a registered name, or a ``Discriminator`` (see :class:`IFQALoss`).
        weights: checkpoint path / folder / state dict (None: search).
        device: where to run (None: CPU, as any new module; ``.to()`` moves it later).
            Inputs on another device are moved to it chunk by chunk.
        amp: ``None`` (fp32, exact), ``"bf16"`` or ``"fp16"`` autocast; CUDA only.
        batch_size: images per forward pass; larger inputs are processed in chunks.
        input_range: value range of tensor inputs, ``(0, 1)`` or ``(-1, 1)``.
        compile: run the network through ``torch.compile`` (one-time compile cost per batch
            shape): ``True``, a mode such as ``"max-autotune"``, or a dict of
            ``torch.compile`` keyword arguments.
        face_gate: ``"auto"`` (the bundled gate for the bundled models with their shipped
            weights, none for the others: published, user-trained or exported weights),
            ``True`` (the bundled gate), ``False`` (none) or a gate's ``.safetensors`` path.
            Maps, scores and region scores are all multiplied by its P(face).

    Inputs are checked at every call, values included (NaN/Inf, another convention): each
    batch scored is new data whose numbers are the result, so unlike :class:`IFQALoss` the
    check is not spread over calls. For a tensor on the device that is one synchronisation
    per call; a tensor on the host is checked before it moves, with none.

    Raises:
        ValueError: a bad ``amp``, ``batch_size`` or ``input_range``; an unknown model.

    Example:
        >>> from ifqa_loss.samples import astronaut_face
        >>> metric = IFQAMetric()             # the bundled model when no other is found
        >>> face = astronaut_face(256)        # (1, 3, 256, 256) in [0, 1]
        >>> flat = torch.full_like(face, 0.5)
        >>> scores = metric(torch.cat([face, flat]))
        >>> scores.shape, bool(scores[0] > scores[1])
        (torch.Size([2]), True)
        >>> metric.maps(face).shape
        torch.Size([1, 1, 256, 256])
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "auto",
        weights: WeightsArg = None,
        *,
        device: str | torch.device | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        amp: str | None = None,
        batch_size: int = 32,
        compile: bool | str | Mapping[str, object] = False,
        face_gate: bool | str | os.PathLike = "auto",
    ) -> None:
        super().__init__()
        device = torch.device("cpu" if device is None else device)
        if amp is not None:
            if amp not in AMP_DTYPES:
                raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
            if device.type != "cuda":
                raise ValueError(
                    f"amp={amp!r} is only offered on CUDA (on CPU it is far slower than fp32); "
                    f"got device {device}"
                )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.amp = amp
        self.batch_size = int(batch_size)
        self.input_range = check_range(input_range)
        net, cfg = resolve_model(model, weights, device)
        self._hold(net, cfg)
        # torch.compile pays a one-time compile cost (tens of seconds for the CNN) per new
        # input shape; worth it for large sets on a GPU.
        kwargs = compile_kwargs(compile)
        self.__dict__["_net_fn"] = net if kwargs is None else torch.compile(net, **kwargs)
        self.__dict__["face_gate"] = _resolve_gate(face_gate, net, cfg, device)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        if self.__dict__.get("face_gate") is not None:
            self.face_gate._apply(fn)
        return super()._apply(fn, recurse)

    def gate_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the face gate sees of network-ready inputs: (B, 3, S, S) normalised for the
        discriminator -> (B, 3, S, S) RGB in [-1, 1]."""
        return from_model_input(x, self.config) * 2 - 1

    def _p_face(self, x: torch.Tensor) -> torch.Tensor:
        """P(face) of network-ready inputs, (B, 3, S, S) -> (B,) (the gate must be set)."""
        return self.face_gate.probability(self.gate_input(x))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=AMP_DTYPES[self.amp])

    def _gated(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Maps of one batch of network-ready inputs on the device, times P(face) when there
        is a gate: ``(maps (B, 1, S, S), P(face) (B,) or None)``. Gradients follow autograd."""
        with self._autocast():
            maps = self._net_fn(x).float()
        if self.face_gate is None:
            return maps, None
        p = self._p_face(x)
        return maps * p.view(-1, 1, 1, 1), p

    @torch.no_grad()
    def _maps_normalised(
        self, x: torch.Tensor, with_p_face: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Maps of network-ready inputs ((B,3,S,S) in [-1,1]), chunked by ``batch_size``;
        with ``with_p_face``, ``(maps, P(face) (B,))`` (None without a gate)."""
        out, p_face = [], []
        for chunk in x.split(self.batch_size):
            maps, p = self._gated(chunk.to(self.device))
            out.append(maps)
            if p is not None:
                p_face.append(p)
        maps = torch.cat(out)
        if not with_p_face:
            return maps
        return maps, torch.cat(p_face) if p_face else None

    def scores_with_grad(self, images: torch.Tensor) -> torch.Tensor:
        """The scores of :meth:`forward` with gradients to ``images`` (the networks stay
        frozen), in one batch, for a framework that uses the metric as a loss (pyiqa's
        ``as_loss``). Values are checked only when no gradient is being recorded.

        Shape:
            (B, C, H, W) in ``input_range`` -> (B,).
        """
        x = check_images(images, self.input_range, check_values=not torch.is_grad_enabled())
        inp = to_model_input(x.to(self.device, torch.float32), self.config, self.input_range)
        return self._gated(inp)[0].mean((1, 2, 3))

    @torch.no_grad()
    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel realness, (B, C, H, W) images -> (B, 1, S, S) in [0, 1] (S: native size)."""
        x = check_images(images, self.input_range)
        out = []
        for chunk in x.split(self.batch_size):
            chunk = to_model_input(
                chunk.to(self.device, torch.float32), self.config, self.input_range
            )
            out.append(self._maps_normalised(chunk))
        return torch.cat(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores, (B, C, H, W) images in ``input_range`` -> (B,) in [0, 1], higher is better."""
        return self.maps(images).mean((1, 2, 3))

    @torch.no_grad()
    def p_face(self, images: torch.Tensor) -> torch.Tensor | None:
        """The face gate's P(face) of (B, C, H, W) images in ``input_range`` -> (B,) in
        [0, 1], as the gate sees them inside the metric; None without a gate."""
        if self.face_gate is None:
            return None
        x = check_images(images, self.input_range)
        out = []
        for chunk in x.split(self.batch_size):
            chunk = chunk.to(self.device, torch.float32)
            out.append(self._p_face(to_model_input(chunk, self.config, self.input_range)))
        return torch.cat(out)

    @torch.no_grad()
    def region_scores(
        self,
        images: torch.Tensor | None = None,
        landmarks: torch.Tensor | None = None,
        *,
        maps: torch.Tensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean realness inside the eyes, nose, mouth and the rest of the face, per image.

        Args:
            images: (B, C, H, W) images (or pass ``maps`` computed before).
            landmarks: (B, 5, 2) / (B, 68, 2) pixel coordinates in the images; None: the
                FFHQ-aligned template (aligned face crops).
            maps: precomputed (B, 1, S, S) maps, instead of ``images``.
            image_size: (H, W) of the images the landmarks refer to, when passing ``maps``.

        Returns:
            ``{"eyes", "nose", "mouth", "rest", "overall"}`` -> (B,) tensors; each region mean is
            weighted by its soft mask.
        """
        if maps is None:
            if images is None:
                raise ValueError("region_scores needs images or maps")
            maps = self.maps(images)
            image_size = tuple(images.shape[-2:])
        s = maps.shape[-1]
        b = maps.shape[0]
        if landmarks is not None:
            if image_size is None:
                raise ValueError("pass image_size=(H, W) with landmarks and precomputed maps")
            h, w = image_size
            scale = torch.tensor([s / w, s / h], device=landmarks.device, dtype=landmarks.dtype)
            masks = face_region_masks(landmarks * scale, s, BREAKDOWN_REGIONS)
        else:
            masks = face_region_masks(None, s, BREAKDOWN_REGIONS, batch_size=b)
        masks = masks.to(maps.device, maps.dtype)
        num = (masks * maps).sum((2, 3))
        den = masks.sum((2, 3)).clamp_min(1e-8)
        out = {name: num[:, i] / den[:, i] for i, name in enumerate(BREAKDOWN_REGIONS)}
        out["overall"] = maps.mean((1, 2, 3))
        return out

    def score_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        regions: bool = False,
        return_maps: bool = False,
        workers: int = 0,
        progress: bool | None = False,
        on_batch: Callable[[list[dict]], None] | None = None,
        align: bool | AlignOptions = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        check_face: bool = False,
    ) -> list[dict]:
        """Score image files with the original release's preprocessing of this model.

        A file's score equals what the original script prints for the same weights (fp32).
        Files are decoded like the original script (``cv2.imread``): grayscale is repeated to
        RGB, an alpha channel is dropped, 16-bit images are reduced to 8 bits (high byte). A file
        that cannot be read gets a record with ``score=None`` and its ``error``; the others are
        still scored. So does a file whose header says it has more than ``max_pixels`` pixels:
        it is refused before it is decoded, which bounds the memory of a run to about
        ``max(workers, 1) x 6 bytes x max_pixels`` whatever the files (docs/robustness.md).

        Args:
            paths: image files.
            regions: add the eyes/nose/mouth/rest means (template regions: meaningful for
                aligned crops).
            return_maps: add each ``map`` ((1, S, S) CPU tensor) to its record.
            workers: DataLoader worker processes that decode files while the network runs
                (0: decode in this process).
            progress: show a tqdm progress bar with images/s on stderr (None: when stderr is a
                terminal).
            on_batch: called with each finished batch's records, maps included, e.g. to write
                heatmaps as the run goes instead of keeping every map.
            align: treat the files as photographs: find every face (dlib), align it to the
                FFHQ crop (:mod:`ifqa_loss.align`) and score each crop as a file of that crop
                would score. ``True`` for the defaults or an
                :class:`~ifqa_loss.align.AlignOptions`. Needs ``pip install
                "ifqa-loss[align]"``. Region means then use each face's own 68 landmarks.
            max_pixels: refuse images of more pixels (width x height, from the file's
                header) than this; default 100 million.
            check_face: flag images in which dlib finds no face (``flag="no_face"``); needs
                the ``[align]`` extra. Ignored with ``align`` (its faces were found).

        Returns:
            One dict per path, in order: ``path``, ``score`` (float or None), ``error`` (str or
            None), ``flag`` (None, ``"near_constant"`` or ``"no_face"``: the score says nothing
            about a face, :mod:`ifqa_loss.files.flags`), ``p_face`` (the face gate's P(face), None
            without a gate; under :data:`~ifqa_loss.gate.FACE_THRESHOLD` the image is flagged
            ``"no_face"``), plus the region means and ``map`` as requested. With ``align``, one
            dict per face instead, in the photo's left-to-right order, adding ``face`` (index),
            ``faces`` (count in the photo), ``box`` ([x0, y0, x1, y1], pixels), ``confidence``
            (detector score), ``landmarks`` (the five points in the photo) and ``matrix``
            (the 2x3 photo -> crop affine, for :func:`~ifqa_loss.align.paste_back`); a photo
            without a face gives one dict with ``faces=0``, ``face=None`` and ``error="no face
            found"``; an unreadable file one with ``faces=None`` and its error.
        """
        from .files.scoring import score_paths

        options = None
        max_pixels = check_max_pixels(max_pixels)
        if align or check_face:
            from .align import require

            require()  # the missing extra is one clear error, not one per file
        if align:
            options = align if isinstance(align, AlignOptions) else AlignOptions()
        region_fn = None
        if regions:
            crop = (options.size, options.size) if options is not None else None

            def region_fn(maps: torch.Tensor, landmarks: torch.Tensor | None = None):
                if landmarks is None:
                    reg = self.region_scores(maps=maps)
                else:
                    lm = landmarks.to(maps.device)
                    reg = self.region_scores(maps=maps, landmarks=lm, image_size=crop)
                return {name: reg[name] for name in BREAKDOWN_REGIONS}

        return score_paths(
            functools.partial(self._maps_normalised, with_p_face=True),
            region_fn,
            [os.fspath(p) for p in paths],
            self.config,
            batch_size=self.batch_size,
            workers=workers,
            pin_memory=self.device.type == "cuda",
            return_maps=return_maps,
            progress=progress,
            on_batch=on_batch,
            align=options,
            max_pixels=max_pixels,
            check_face=bool(check_face) and options is None,
        )
