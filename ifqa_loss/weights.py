"""The one place that decides ``model="auto"`` and finds, verifies, loads and exports weights.

Discriminators (:func:`load_discriminator`, :func:`create_model`, :func:`resolve_model`) and the
face gate (:func:`load_face_gate`) are loaded here and nowhere else; every export
(:func:`export_discriminator`, :func:`export_face_gate`) records which model it holds, so
``model="auto"`` given the file picks the right architecture.

Checkpoints are never unpickled without restriction: ``.pth`` files go through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, and
``.safetensors`` files hold no code at all.

>>> net = load_discriminator("ifqa-lite")          # the bundled model, frozen
>>> net.model_name, net.frozen, net.native_size
('ifqa-lite', True, 256)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ._io import atomic_write
from .gate import FaceGate
from .models.base import Discriminator
from .models.registry import (
    CNN_DRIVE_ID,
    VIT_DRIVE_ID,
    ModelConfig,
    get_model_config,
    list_models,
)

log = logging.getLogger("ifqa_loss")

ENV_VAR = "IFQA_WEIGHTS"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
GATE_FILE = "face-gate.safetensors"
# The header key naming the model a .safetensors file holds (see model_of).
MODEL_KEY = "ifqa_model"
GATE_MODEL = "face-gate"
WeightsArg = str | os.PathLike | Mapping[str, torch.Tensor] | None
_ANNOUNCED: set[str] = set()
# Wrappers under which training code commonly nests a state dict.
_WRAPPER_KEYS = ("D", "state_dict", "params_ema", "params", "model")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the architecture."""


def cache_dir() -> Path:
    """The user cache folder searched for weights (``$XDG_CACHE_HOME/ifqa_loss``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ifqa_loss"


def search_locations(cfg: ModelConfig) -> list[Path]:
    """Where ``cfg.weight_file`` is looked for, in order."""
    places: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            places.append(p / cfg.weight_file)
        elif _env_file_fits(p, cfg):
            places.append(p)
    places.append(Path.cwd() / "weights" / cfg.weight_file)
    places.append(cache_dir() / cfg.weight_file)
    if cfg.bundled:
        places.append(BUNDLED_DIR / cfg.weight_file)
    return places


def _env_file_fits(path: Path, cfg: ModelConfig) -> bool:
    """Whether a file named by ``$IFQA_WEIGHTS`` answers for ``cfg``: it carries the model's
    file name, or its header names the model, or (a file that names no model) the model is one
    of the published ones. A bundled model (the audit's judge included) is never replaced by
    a file meant for another model."""
    if path.name == cfg.weight_file:
        return True
    named = model_of(path)
    if named is not None:
        return named == cfg.name
    return not cfg.bundled


def _download_hint(cfg: ModelConfig) -> str:
    return (
        "The original checkpoints come from the official IFQA release (Google Drive): "
        f"IFQA_Metric.pth (model 'ifqa') is file id {CNN_DRIVE_ID} and IFQA++_Metric.pth "
        f"(model 'ifqa++') is file id {VIT_DRIVE_ID}. Put {cfg.weight_file} in ./weights/, "
        f"in {cache_dir()}, or point ${ENV_VAR} at it (file or folder); or pass weights=PATH. "
        "Without them, model='auto' uses the model bundled with the package."
    )


def find_weights(name: str) -> Path:
    """Locate the weight file of a registered model without loading it.

    Raises:
        FileNotFoundError: naming every place searched and where the files come from.
    """
    cfg = get_model_config(name)
    places = search_locations(cfg)
    for p in places:
        if p.is_file():
            return p
    listing = "\n".join(f"  - {p}" for p in places)
    raise FileNotFoundError(
        f"no weights found for model {name!r} ({cfg.weight_file}). Searched:\n{listing}\n"
        + _download_hint(cfg)
    )


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely and return a flat ``{key: tensor}`` on the CPU.

    Accepts the original ``{'D': state_dict}`` files, bare state dicts, common wrappers
    (``state_dict``, ``params_ema``, ``params``, ``model``), keys prefixed ``module.`` or
    ``_orig_mod.``, and ``.safetensors`` files.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is corrupt, truncated, holds code or objects other than
            tensors, or holds no state dict; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            detail = (
                "it contains pickled objects other than tensors, which are refused "
                "(loading uses weights_only=True and never runs code from a checkpoint)"
            )
        raise CheckpointError(f"cannot read checkpoint {p}: {detail}") from e
    return _unwrap(obj, p)


def _unwrap(obj: object, p: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not _all_tensors(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"checkpoint {p} holds no state dict (found {type(obj).__name__}); expected "
            f"{{'D': state_dict}}, a bare state dict, or a .safetensors file"
        )
    if not _all_tensors(obj):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
        raise CheckpointError(f"checkpoint {p} has entries that are not tensors: {bad}")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for pre in _PREFIXES:
            while k.startswith(pre):
                k = k[len(pre) :]
        out[k] = v
    return out


def _all_tensors(d: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def _first(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def check_state_dict(
    net: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise CheckpointError unless ``sd`` matches ``net`` key for key and shape for shape.

    The message lists the first few missing, unexpected and shape-mismatched keys, with counts.
    """
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} != expected {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_first(shapes, 3)}")
    name = getattr(net, "model_name", type(net).__name__)
    raise CheckpointError(f"{source} does not fit {name} ({len(own)} tensors): " + "; ".join(parts))


def load_into(
    net: torch.nn.Module,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None,
    *,
    name: str | None = None,
    sha256: str | None = None,
    verify: bool = True,
) -> str:
    """Load a checkpoint into ``net`` strictly (dtype kept as ``net``'s) and return its origin.

    Args:
        net: the network (its own keys and shapes are the contract; ``meta`` tensors are
            replaced by the checkpoint's).
        weights: a checkpoint path, a folder holding ``name``'s weight file, an in-memory
            state dict, or None to search for ``name``'s file (:func:`find_weights`).
        name: the registered model the weights belong to (their file name, digest and search).
        sha256, verify: the digest to check (default: the registry's, for its own file name).

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_discriminator`.
    """
    cfg = get_model_config(name) if name is not None else None
    if isinstance(weights, Mapping):
        sd = _unwrap(weights, Path("<state dict>"))
        origin, source = "in-memory state dict", "the given state dict"
    else:
        if weights is None:
            if cfg is None:
                raise ValueError("load_into needs weights=PATH or a registered model name")
            path = find_weights(cfg.name)
        else:
            path = Path(weights).expanduser()
            if path.is_dir() and cfg is not None:
                path = path / cfg.weight_file
        known = cfg.sha256 if cfg is not None and path.name == cfg.weight_file else None
        expected = sha256 or known
        if verify and expected and path.is_file():
            digest = sha256sum(path)
            if digest != expected.lower():
                raise CheckpointError(
                    f"checkpoint {path} has sha256 {digest}, expected {expected}: the file is "
                    f"damaged or is not the {path.name} this package knows"
                )
        sd = read_state_dict(path)
        origin = str(path.resolve()) if path.is_file() else str(path)
        source = f"checkpoint {path}"
    check_state_dict(net, sd, source)
    own = net.state_dict()
    sd = {k: v.to(own[k].dtype) if own[k].is_floating_point() else v for k, v in sd.items()}
    # A network built on the meta device takes the checkpoint's tensors; another keeps its
    # own parameters (an optimizer may hold them) and copies the values in.
    on_meta = any(t.is_meta for t in net.state_dict().values())
    net.load_state_dict(sd, strict=True, assign=on_meta)
    net.weights_origin = origin
    log.info("ifqa_loss: loaded %s weights from %s", name or type(net).__name__, origin)
    return origin


def _built(cfg: ModelConfig, on_meta: bool) -> Discriminator:
    if on_meta:
        # No memory or init time spent on parameters the checkpoint replaces anyway
        # (656.9 M of them for ifqa++).
        with torch.device("meta"):
            net = cfg.build()
    else:
        net = cfg.build()
    net.model_name = cfg.name
    return net


def load_discriminator(
    name: str = "ifqa",
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    *,
    sha256: str | None = None,
    verify: bool = True,
) -> Discriminator:
    """Build a registered discriminator, load its weights strictly, and freeze it.

    Args:
        name: a registered model (see :func:`ifqa_loss.list_models`).
        weights: a checkpoint path, a folder holding the model's weight file, an in-memory
            state dict, or None to search ``$IFQA_WEIGHTS`` (file or folder), ``./weights/``,
            the user cache folder and, for bundled models, the package.
        device: where to put the network (default: CPU).
        sha256: expected digest of the file; defaults to the registry's, if any.
        verify: check the digest when one is known.

    Returns:
        The network in eval mode with ``requires_grad=False`` everywhere and eval mode pinned
        (``.train()`` keeps it in eval). ``D(x)``: (B,3,S,S) in [-1,1] -> (B,1,S,S) in [0,1].
        ``D.model_name`` and ``D.weights_origin`` say what was loaded.

    Raises:
        FileNotFoundError: no weights found (the message lists every place searched).
        CheckpointError: unreadable file, digest mismatch, or keys/shapes that do not fit.

    >>> D = load_discriminator("ifqa-lite")
    >>> D(torch.zeros(1, 3, 256, 256)).shape
    torch.Size([1, 1, 256, 256])
    """
    cfg = get_model_config(name)
    net = _built(cfg, on_meta=True)
    load_into(net, weights, name=cfg.name, sha256=sha256, verify=verify)
    net.freeze()
    return net.to(device) if device is not None else net


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
) -> Discriminator:
    """A trainable discriminator, as ``timm.create_model``: random (default) or ``pretrained``.

    Unlike :func:`load_discriminator` (frozen, for scoring), the network is in train mode with
    gradients on, to fine-tune or train against.

    Args:
        name: a registered model.
        pretrained: load its weights (``weights``, or searched as :func:`find_weights` does).
        weights: a checkpoint for ``pretrained`` (must be None when not ``pretrained``).
        device: where to put it (default: CPU).

    Raises:
        ValueError: ``weights`` without ``pretrained``; an unknown name.
        FileNotFoundError, CheckpointError: as :func:`load_discriminator`.

    >>> net = create_model("ifqa-lite", pretrained=True)
    >>> net.training, next(net.parameters()).requires_grad
    (True, True)
    """
    cfg = get_model_config(name)
    if weights is not None and not pretrained:
        raise ValueError("pretrained=False starts from random weights: pass weights=None")
    net = _built(cfg, on_meta=pretrained)
    if pretrained:
        load_into(net, weights, name=cfg.name)
    else:
        net.weights_origin = "random initialisation"
    net.train()
    return net.to(device) if device is not None else net


def bundled_model_names() -> list[str]:
    """Bundled models that ``model="auto"`` may fall back to, whose weight file is present."""
    names = []
    for cfg in list_models():
        if cfg.bundled and cfg.auto_fallback:
            try:
                find_weights(cfg.name)
            except FileNotFoundError:
                continue
            names.append(cfg.name)
    return names


def auto_model(weights: WeightsArg = None) -> str:
    """The model ``model="auto"`` stands for: the one a given file names in its header (else
    ``ifqa``); without a file, ``ifqa`` when its weights are found, else the first bundled
    model, announced once per process as a warning (then at INFO).

    Raises:
        FileNotFoundError: neither the original weights nor a bundled model.
    """
    if weights is not None:
        named = model_of(weights) if isinstance(weights, str | os.PathLike) else None
        return named or "ifqa"
    try:
        find_weights("ifqa")
        return "ifqa"
    except FileNotFoundError as e:
        bundled = bundled_model_names()
        if not bundled:
            raise FileNotFoundError(
                f"model='auto' found neither the original ifqa weights nor a bundled model.\n{e}"
            ) from None
    model = bundled[0]
    level = logging.INFO if model in _ANNOUNCED else logging.WARNING
    _ANNOUNCED.add(model)
    log.log(
        level,
        "ifqa_loss: original IFQA weights not found; using the bundled model %r "
        "(pass model='ifqa' with weights=PATH for the original metric)",
        model,
        extra={"auto_fallback": model},  # the CLI says it in its "# model:" line
    )
    return model


def resolve_model(
    model: str | torch.nn.Module,
    weights: WeightsArg = None,
    device: str | torch.device | None = None,
    *,
    trainable: bool = False,
) -> tuple[Discriminator, ModelConfig]:
    """The ``model``/``weights`` arguments of the loss, metric and GAN term as a network.

    ``model``: ``"auto"`` (:func:`auto_model`), a registered name, or a ``Discriminator``
    (used as is when frozen; copied when ``trainable``, so the caller's module stays as it
    was). Returns the network (frozen, or in train mode when ``trainable``) and its config.

    Raises:
        TypeError: ``model`` is neither a string nor a ``Discriminator``.
        FileNotFoundError, CheckpointError, ValueError: as :func:`load_discriminator`.
    """
    if isinstance(model, torch.nn.Module):
        return _given_module(model, device, trainable)
    if not isinstance(model, str):
        raise TypeError(f"model must be a string or a Discriminator, got {type(model).__name__}")
    cfg = get_model_config(auto_model(weights) if model == "auto" else model)
    if trainable:
        net = create_model(cfg.name, pretrained=True, weights=weights, device=device)
    else:
        net = load_discriminator(cfg.name, weights=weights, device=device)
    log.info("ifqa_loss: using model %r (weights: %s)", cfg.name, net.weights_origin)
    return net, cfg


def _given_module(
    model: torch.nn.Module, device: str | torch.device | None, trainable: bool
) -> tuple[Discriminator, ModelConfig]:
    """A user's ``Discriminator`` and a config derived from it."""
    import copy

    if not isinstance(model, Discriminator):
        raise TypeError(
            f"model must be a registered name or an ifqa_loss Discriminator, got "
            f"{type(model).__name__}"
        )
    if trainable:
        net = copy.deepcopy(model)
        net._frozen = False
        net.requires_grad_(True).train()
    else:
        net = model.freeze()
    if device is not None:
        net.to(device)
    name = getattr(net, "model_name", None)
    try:
        base = get_model_config(name or "")
    except ValueError:
        base = get_model_config("ifqa")  # RGB in [-1, 1], bilinear: the CNN family's input
    cfg = dataclasses.replace(
        base,
        name=name or type(net).__name__,
        native_size=net.native_size,
        weight_file="",
        source="user-supplied module",
        sha256=None,
        bundled=False,
    )
    if not hasattr(net, "weights_origin"):
        net.weights_origin = "user-supplied module"
    return net, cfg


def architecture_name(net: torch.nn.Module) -> str | None:
    """The registered model whose architecture ``net`` has (key for key, shape for shape),
    preferring models ``model="auto"`` may use; None when none fits."""
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for cfg in sorted(list_models(), key=lambda c: not c.auto_fallback):
        with torch.device("meta"):
            ref = cfg.build().state_dict()
        if own == {k: tuple(v.shape) for k, v in ref.items()}:
            return cfg.name
    return None


def save_safetensors(
    sd: Mapping[str, torch.Tensor],
    out: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a state dict as ``.safetensors`` atomically (temp file in the same folder, rename).

    ``metadata``: string pairs stored in the file's header. Use :func:`export_discriminator` or
    :func:`export_face_gate` for a network: they record its model.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    meta = dict(metadata) if metadata else None
    return atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))


def export_discriminator(
    net: torch.nn.Module,
    path: str | os.PathLike,
    *,
    model: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a discriminator's weights as ``.safetensors``, its model named in the header.

    ``model``: the registered model it is (default: its ``model_name``, else the registered
    architecture it fits, :func:`architecture_name`); ``IFQAMetric(weights=path)`` (``model=
    "auto"``) then builds that architecture. A network of no registered architecture (a
    trainer's experiment) is written with its class and sizes in the header instead; register
    a :class:`~ifqa_loss.ModelConfig` to load it by name. ``dtype``: ``torch.float16`` halves
    the file.

    Raises:
        ValueError: ``model`` is given but not registered.
    """
    if model is not None:
        name = get_model_config(model).name
    else:
        own = getattr(net, "model_name", None)
        registered = {c.name for c in list_models()}
        name = own if own in registered else architecture_name(net)
    if name is not None:
        meta = {MODEL_KEY: name}
    else:
        sizes = {k: getattr(net, k) for k in ("width", "native_size") if hasattr(net, k)}
        meta = {"ifqa_architecture": f"{type(net).__name__}{sizes}"}
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    return save_safetensors(sd, path, meta)


def export_face_gate(
    gate: FaceGate, path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a face gate as ``.safetensors`` (its width and ``metadata``, e.g. the recipe, in
    the header), readable by :func:`load_face_gate`."""
    meta = {MODEL_KEY: GATE_MODEL, "width": str(gate.width), **dict(metadata or {})}
    return save_safetensors(gate.state_dict(), path, meta)


def bundled_gate_path() -> Path:
    """The bundled gate's file (it may be missing in a trimmed install)."""
    return BUNDLED_DIR / GATE_FILE


def load_face_gate(
    path: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> FaceGate:
    """A frozen :class:`~ifqa_loss.gate.FaceGate` from a ``.safetensors`` file (None: the
    bundled one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not hold a face gate's tensors.

    >>> gate = load_face_gate()
    >>> gate.probability(torch.zeros(1, 3, 256, 256)).shape
    torch.Size([1])
    """
    from safetensors import safe_open

    p = Path(path) if path is not None else bundled_gate_path()
    if not p.is_file():
        raise FileNotFoundError(f"face gate weights not found: {p}")
    if p.suffix != ".safetensors":
        raise ValueError(f"a face gate is loaded from a .safetensors file, got {p}")
    with safe_open(str(p), framework="pt") as f:
        width = int((f.metadata() or {}).get("width", 32))
    gate = FaceGate(width)
    try:
        load_into(gate, p)
    except CheckpointError as e:
        raise ValueError(f"{p} does not hold a FaceGate of width {width}: {e}") from None
    gate.eval().requires_grad_(False)
    return gate.to(device) if device is not None else gate


def model_of(path: str | os.PathLike) -> str | None:
    """The registered model a ``.safetensors`` file names in its header (``ifqa_model``), if any.

    Reads the header only; None for other files, unreadable headers or unknown names.
    """
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            name = (f.metadata() or {}).get(MODEL_KEY)
    except Exception:
        return None
    try:
        return get_model_config(name).name if name else None
    except ValueError:
        return None


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None
) -> Path:
    """Convert a ``.pth`` checkpoint to ``.safetensors`` (prefixes and wrappers removed).

    With ``model``, the state dict is first checked strictly against that architecture and
    the model is named in the file's header (as :func:`export_discriminator` does).
    """
    sd = read_state_dict(src)
    if model is None:
        return save_safetensors(sd, dst)
    check_state_dict(_built(get_model_config(model), on_meta=True), sd, f"checkpoint {src}")
    return save_safetensors(sd, dst, {MODEL_KEY: get_model_config(model).name})
