"""Discriminator architectures and the model registry."""

from .base import Discriminator
from .cnn import IFQACNN
from .registry import ModelConfig, get_model_config, list_models, register_model
from .vit import IFQAViT

__all__ = [
    "IFQACNN",
    "Discriminator",
    "IFQAViT",
    "ModelConfig",
    "get_model_config",
    "list_models",
    "register_model",
]
