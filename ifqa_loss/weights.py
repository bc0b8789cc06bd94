"""Finding, verifying and safely loading discriminator checkpoints.

Checkpoints are never unpickled without restriction: ``.pth`` files go through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, and
``.safetensors`` files hold no code at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ._io import atomic_write
from .models.base import Discriminator
from .models.registry import CNN_DRIVE_ID, VIT_DRIVE_ID, ModelConfig, get_model_config

log = logging.getLogger("ifqa_loss")

ENV_VAR = "IFQA_WEIGHTS"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
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
        places.append(p if p.is_file() else p / cfg.weight_file)
    places.append(Path.cwd() / "weights" / cfg.weight_file)
    places.append(cache_dir() / cfg.weight_file)
    if cfg.bundled:
        places.append(BUNDLED_DIR / cfg.weight_file)
    return places


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
    """
    cfg = get_model_config(name)
    # Built on the meta device: no memory or init time is spent on parameters that the
    # checkpoint replaces anyway (656.9 M of them for ifqa++).
    with torch.device("meta"):
        net = cfg.build()
    net.model_name = cfg.name
    if isinstance(weights, Mapping):
        sd = _unwrap(weights, Path("<state dict>"))
        origin = "in-memory state dict"
        check_state_dict(net, sd, "the given state dict")
    else:
        if weights is None:
            path = find_weights(name)
        else:
            path = Path(weights).expanduser()
            if path.is_dir():
                path = path / cfg.weight_file
        expected = sha256 or (cfg.sha256 if path.name == cfg.weight_file else None)
        if verify and expected:
            digest = sha256sum(path) if path.is_file() else None
            if digest is not None and digest != expected.lower():
                raise CheckpointError(
                    f"checkpoint {path} has sha256 {digest}, expected {expected}: the file is "
                    f"damaged or is not the {cfg.weight_file} this package knows"
                )
        sd = read_state_dict(path)
        origin = str(path.resolve()) if path.is_file() else str(path)
        check_state_dict(net, sd, f"checkpoint {path}")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    net.load_state_dict(sd, strict=True, assign=True)
    net.weights_origin = origin
    net.freeze()
    if device is not None:
        net.to(device)
    log.info("ifqa_loss: loaded %s weights from %s", cfg.name, origin)
    return net


def save_safetensors(
    sd: Mapping[str, torch.Tensor],
    out: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a state dict as ``.safetensors`` atomically (temp file in the same folder, rename).

    ``metadata``: string pairs stored in the file's header; ``{"ifqa_model": NAME}`` lets
    ``model="auto"`` pick the architecture the file was saved from (:func:`model_of`).
    """
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in sd.items()}
    meta = dict(metadata) if metadata else None
    return atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))


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
            name = (f.metadata() or {}).get("ifqa_model")
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

    With ``model``, the state dict is first checked strictly against that architecture.
    """
    sd = read_state_dict(src)
    if model is not None:
        with torch.device("meta"):
            net = get_model_config(model).build()
        check_state_dict(net, sd, f"checkpoint {src}")
    return save_safetensors(sd, dst)
