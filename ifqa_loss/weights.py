"""The one place that decides ``model="auto"`` and finds, verifies, loads and exports weights.

Discriminators (:func:`load_discriminator`, :func:`create_model`, :func:`resolve_model`) and the
face gate (:func:`load_face_gate`) are loaded here and nowhere else; every export
(:func:`export_discriminator`, :func:`export_face_gate`) records which model it holds, so
``model="auto"`` given the file picks the right architecture.

A model named explicitly (``load_discriminator("ifqa")``, ``IFQAMetric(model="ifqa")``) whose
weights are nowhere on this machine is downloaded once into the user cache
(:func:`download_weights`; the transport is :mod:`ifqa_loss.download`); ``model="auto"`` never
downloads.

Checkpoints are never unpickled without restriction: ``.pth`` files go through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, and
``.safetensors`` files hold no code at all.

>>> net = load_discriminator("ifqa-lite")          # the bundled model, frozen
>>> net.model_name, net.frozen, net.native_size
('ifqa-lite', True, 256)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from ._io import atomic_write, atomic_write_text
from .download import (
    OFFLINE_VAR,
    DownloadError,
    by_hand,
    describe,
    fetch,
    looks_like_html,
    offline,
    source_of,
)
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
# Beside a downloaded file: its digest, in the format of ``sha256sum`` (``sha256sum -c`` reads it).
DIGEST_SUFFIX = ".sha256"


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
    fetch_it = (
        f"`ifqa download {cfg.name}` (or naming model={cfg.name!r}) downloads them into "
        f"{cache_dir()}. "
        if cfg.downloadable
        else ""
    )
    return (
        f"{fetch_it}The original checkpoints come from the official IFQA release (Google "
        f"Drive): IFQA_Metric.pth (model 'ifqa') is file id {CNN_DRIVE_ID} and "
        f"IFQA++_Metric.pth (model 'ifqa++') is file id {VIT_DRIVE_ID}. Put {cfg.weight_file} "
        f"in ./weights/, in {cache_dir()}, or point ${ENV_VAR} at it (file or folder); or pass "
        "weights=PATH. Without them, model='auto' uses the model bundled with the package."
    )


def _by_hand(cfg: ModelConfig) -> str:
    return (
        f"To download it by hand: {by_hand(cfg)}; put {cfg.weight_file} in {cache_dir()} or "
        f"./weights/, or point ${ENV_VAR} at it."
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


def obtain_weights(name: str, *, download: bool = True) -> Path:
    """:func:`find_weights`, then, for a downloadable model (``download``), its official file
    downloaded into the cache (:func:`download_weights`).

    Raises:
        FileNotFoundError: not found and not downloadable (or ``download=False``).
        DownloadError: not found, and the download was refused (``$IFQA_OFFLINE``) or failed.
        CheckpointError: what was downloaded is not a checkpoint of the model.
    """
    cfg = get_model_config(name)
    try:
        return find_weights(cfg.name)
    except FileNotFoundError as e:
        if not (download and cfg.downloadable):
            raise
        searched = str(e).split("\n")[:-1]  # the places searched, without the general hint
    try:
        return download_weights(cfg.name)
    except DownloadError as e:
        raise DownloadError("\n".join([*searched, str(e)])) from e.__cause__


def download_weights(name: str, *, progress: bool | None = None) -> Path:
    """Download a registered model's weights into the cache folder, once, and return the file.

    The file arrives as a temporary file in the cache folder and is moved into place only
    once it loads strictly (``weights_only=True``, keys and shapes of the model); its sha256 is
    then recorded beside it (``<file>.sha256``), and later loads check it. A file lock makes
    concurrent callers (DDP ranks, parallel jobs) download once: the others wait and use the
    file. A file already in the cache is returned as is.

    Args:
        name: a model whose registry entry says where its weights are (``drive_id``, ``url``).
        progress: a progress bar on stderr (default: when stderr is a terminal).

    Raises:
        ValueError: the model is not downloadable.
        DownloadError: downloads are off (``$IFQA_OFFLINE``) or the transfer failed.
        CheckpointError: what arrived is not a checkpoint of the model (a web page, a truncated
            file, another model's weights); nothing is left in the cache.
    """
    cfg = get_model_config(name)
    if not cfg.downloadable:
        able = ", ".join(c.name for c in list_models() if c.downloadable) or "none"
        raise ValueError(
            f"model {cfg.name!r} cannot be downloaded ({cfg.source}); downloadable models: {able}"
        )
    target = cache_dir() / cfg.weight_file
    if target.is_file():
        return target
    if offline():
        raise DownloadError(
            f"model {cfg.name!r}: {cfg.weight_file} is not on this machine and downloads are "
            f"off (${OFFLINE_VAR}={os.environ.get(OFFLINE_VAR)}). {_by_hand(cfg)}"
        )
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("ifqa_loss: waiting for another process downloading %s", target)
        lock.acquire()
    try:
        if target.is_file():  # downloaded by the process that held the lock
            return target
        # A fixed name, so that a Google Drive download interrupted earlier resumes.
        tmp = target.with_name(f".{target.stem}.download{target.suffix}")
        log.warning(
            "ifqa_loss: downloading %s (model %r) from %s into %s",
            cfg.weight_file,
            cfg.name,
            source_of(cfg),
            target.parent,
        )
        try:
            source = fetch(cfg, tmp, progress=sys.stderr.isatty() if progress is None else progress)
            _check_download(cfg, tmp, source)
            digest = sha256sum(tmp)
            if cfg.sha256 and digest != cfg.sha256.lower():
                raise CheckpointError(
                    f"the download of {cfg.weight_file} from {source} has sha256 {digest}, "
                    f"expected {cfg.sha256}; nothing was kept in {target.parent}. " + _by_hand(cfg)
                )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic_write_text(digest_file(target), f"{digest}  {target.name}\n")
        log.warning("ifqa_loss: %s saved (sha256 %s)", target, digest)
        return target
    finally:
        lock.release()


def _check_download(cfg: ModelConfig, tmp: Path, source: str) -> None:
    """Raise CheckpointError, saying what arrived, unless ``tmp`` loads strictly as ``cfg``."""
    with open(tmp, "rb") as f:
        head = f.read(1024)
    intro = f"the download of {cfg.weight_file} from {source}"
    kept = f"Nothing was kept in {tmp.parent}. {_by_hand(cfg)}"
    if looks_like_html(head):
        raise CheckpointError(
            f"{intro} is an HTML page, not a checkpoint ({describe(tmp)}): Google Drive sends "
            "one instead of the file when its download quota is exceeded or to confirm a virus "
            f"scan; other servers, for a missing file or a login. {kept}"
        )
    try:
        sd = read_state_dict(tmp)
        check_state_dict(_built(cfg, on_meta=True), sd, "it")
    except CheckpointError as e:
        detail = str(e).replace(f"checkpoint {tmp}", "it").replace(str(tmp), "it")
        if detail.startswith("cannot read it"):  # torch's advice after its first sentence
            detail = detail.split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"{intro} is not a checkpoint of model {cfg.name!r}: {describe(tmp)} arrived, and "
            f"{detail}. {kept}"
        ) from None


def digest_file(path: str | os.PathLike) -> Path:
    """The file beside ``path`` recording its sha256 (``<file>.sha256``)."""
    p = Path(path)
    return p.with_name(p.name + DIGEST_SUFFIX)


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The digest recorded beside ``path`` when it was downloaded (None: no record).

    Raises:
        CheckpointError: the record holds no sha256 digest.
    """
    side = digest_file(path)
    if not side.is_file():
        return None
    words = side.read_text(encoding="utf-8", errors="replace").split()
    if not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise CheckpointError(
            f"{side} holds no sha256 digest; expected '<64 hex digits>  {Path(path).name}' "
            "(delete it to load the file unchecked)"
        )
    return words[0].lower()


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
    download: bool = False,
) -> str:
    """Load a checkpoint into ``net`` strictly (dtype kept as ``net``'s) and return its origin.

    Args:
        net: the network (its own keys and shapes are the contract; ``meta`` tensors are
            replaced by the checkpoint's).
        weights: a checkpoint path, a folder holding ``name``'s weight file, an in-memory
            state dict, or None to search for ``name``'s file (:func:`find_weights`).
        name: the registered model the weights belong to (their file name, digest and search).
        sha256, verify: the digest to check (default: the registry's, for its own file name),
            and the one recorded beside a downloaded file (``<file>.sha256``).
        download: with ``weights=None``, download ``name``'s weights when none are found.

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
            path = obtain_weights(cfg.name, download=download)
        else:
            path = Path(weights).expanduser()
            if path.is_dir() and cfg is not None:
                path = path / cfg.weight_file
        if verify and path.is_file():
            _verify_digest(path, cfg, sha256)
        sd = read_state_dict(path)
        origin = str(path.resolve()) if path.is_file() else str(path)
        source = f"checkpoint {path}"
    check_state_dict(net, sd, source)
    own = net.state_dict()
    sd = {k: v.to(own[k].dtype) if own[k].is_floating_point() else v for k, v in sd.items()}
    # A network built on the meta device takes the checkpoint's tensors; another keeps its
    # own parameters (an optimizer may hold them) and copies the values in.
    on_meta = any(t.is_meta for t in own.values())
    net.load_state_dict(sd, strict=True, assign=on_meta)
    net.weights_origin = origin
    log.info("ifqa_loss: loaded %s weights from %s", name or type(net).__name__, origin)
    return origin


def _verify_digest(path: Path, cfg: ModelConfig | None, sha256: str | None) -> None:
    """Raise CheckpointError unless ``path`` has the expected digest (``sha256``, else the
    registry's for its own file name) and the one recorded beside it when it was downloaded.
    Reads the file only when there is a digest to compare."""
    known = cfg.sha256 if cfg is not None and path.name == cfg.weight_file else None
    expected = sha256 or known
    recorded = recorded_sha256(path)
    if not (expected or recorded):
        return
    digest = sha256sum(path)
    if expected and digest != expected.lower():
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest}, expected {expected}: the file is "
            f"damaged or is not the {path.name} this package knows"
        )
    if recorded and digest != recorded:
        again = f"run `ifqa download {cfg.name}`" if cfg else "download it"
        raise CheckpointError(
            f"checkpoint {path} changed since it was downloaded: its sha256 is "
            f"{digest}, but {digest_file(path)} recorded {recorded}. Delete both files "
            f"and {again} again, or pass verify=False to load it as it is"
        )


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
    download: bool = True,
) -> Discriminator:
    """Build a registered discriminator, load its weights strictly, and freeze it.

    Args:
        name: a registered model (see :func:`ifqa_loss.list_models`).
        weights: a checkpoint path, a folder holding the model's weight file, an in-memory
            state dict, or None to search ``$IFQA_WEIGHTS`` (file or folder), ``./weights/``,
            the user cache folder and, for bundled models, the package; a downloadable model
            found nowhere is then downloaded into the cache (:func:`download_weights`).
        device: where to put the network (default: CPU).
        sha256: expected digest of the file; defaults to the registry's, if any.
        verify: check the digest when one is known (given, registered, or recorded beside a
            downloaded file).
        download: False never touches the network (a missing file raises FileNotFoundError).

    Returns:
        The network in eval mode with ``requires_grad=False`` everywhere and eval mode pinned
        (``.train()`` keeps it in eval). ``D(x)``: (B,3,S,S) in [-1,1] -> (B,1,S,S) in [0,1].
        ``D.model_name`` and ``D.weights_origin`` say what was loaded.

    Raises:
        FileNotFoundError: no weights found (the message lists every place searched);
            DownloadError (a FileNotFoundError): downloads off, or the download failed.
        CheckpointError: unreadable file, digest mismatch, or keys/shapes that do not fit.

    >>> D = load_discriminator("ifqa-lite")
    >>> D(torch.zeros(1, 3, 256, 256)).shape
    torch.Size([1, 1, 256, 256])
    """
    cfg = get_model_config(name)
    net = _built(cfg, on_meta=True)
    load_into(net, weights, name=cfg.name, sha256=sha256, verify=verify, download=download)
    net.freeze()
    return net.to(device) if device is not None else net


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    download: bool = True,
) -> Discriminator:
    """A trainable discriminator, as ``timm.create_model``: random (default) or ``pretrained``.

    Unlike :func:`load_discriminator` (frozen, for scoring), the network is in train mode with
    gradients on, to fine-tune or train against.

    Args:
        name: a registered model.
        pretrained: load its weights (``weights``, or searched as :func:`find_weights` does).
        weights: a checkpoint for ``pretrained`` (must be None when not ``pretrained``).
        device: where to put it (default: CPU).
        download: as :func:`load_discriminator` (for ``pretrained`` without ``weights``).

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
        load_into(net, weights, name=cfg.name, download=download)
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
        "(`ifqa download ifqa` fetches the original metric's weights; model='ifqa' downloads "
        "them on first use)",
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
    download = model != "auto"  # "auto" stays offline: it falls back to a bundled model
    if trainable:
        net = create_model(
            cfg.name, pretrained=True, weights=weights, device=device, download=download
        )
    else:
        net = load_discriminator(cfg.name, weights=weights, device=device, download=download)
    log.info("ifqa_loss: using model %r (weights: %s)", cfg.name, net.weights_origin)
    return net, cfg


def _given_module(
    model: torch.nn.Module, device: str | torch.device | None, trainable: bool
) -> tuple[Discriminator, ModelConfig]:
    """A user's ``Discriminator`` and a config derived from it."""
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
        drive_id=None,
        url=None,
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
