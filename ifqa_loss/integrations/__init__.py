"""Glue between ``ifqa_loss`` and training frameworks.

Nothing here is imported by the core package; each submodule imports its framework lazily:

- :mod:`ifqa_loss.integrations.basicsr`: registers the IFQA losses and the ``calculate_ifqa``
  metric into whichever ``basicsr`` is importable (PyPI BasicSR, GFPGAN's dependency, or
  CodeFormer's vendored copy), so BasicSR-style YAML options can name them.
- :mod:`ifqa_loss.integrations.basicsr_train`: ``python -m ifqa_loss.integrations.basicsr_train
  -opt X.yml [--launcher pytorch]``, BasicSR's training pipeline with the registration done.
- :mod:`ifqa_loss.integrations.pyiqa`: registers ``ifqa``, ``ifqa++`` and ``ifqa-lite`` as
  pyiqa metrics (``pyiqa.create_metric``, ``pyiqa.list_models``).
"""
