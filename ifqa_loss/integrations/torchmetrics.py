"""IFQA as a ``torchmetrics.Metric``: accumulate over validation epochs, synchronised under DDP.

Requires the optional dependency ``torchmetrics`` (``pip install "ifqa-loss[torchmetrics]"``)::

    from ifqa_loss.integrations.torchmetrics import IFQAScore

    ifqa = IFQAScore()                    # model="auto", inputs in [0, 1]
    for batch in val_loader:
        ifqa.update(restorer(batch["lq"]))
    ifqa.compute()                        # mean over every image seen, all ranks included

In a LightningModule, ``self.val_ifqa = IFQAScore()`` and ``self.log("val/ifqa",
self.val_ifqa)`` after ``self.val_ifqa.update(out)``; Lightning calls ``compute``/``reset``.
The discriminator is frozen and kept outside the module tree, so it is neither trained,
checkpointed nor synchronised; only the running sums are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

try:
    from torchmetrics import Metric
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ifqa_loss.integrations.torchmetrics needs torchmetrics: "
        'pip install "ifqa-loss[torchmetrics]"'
    ) from e

from ..metric import BREAKDOWN_REGIONS, IFQAMetric


class IFQAScore(Metric):
    """Mean IFQA score (higher is better) over all images passed to :meth:`update`.

    Args:
        model, weights, input_range, batch_size, amp: as :class:`~ifqa_loss.IFQAMetric`.
        regions: also accumulate the eyes/nose/mouth/rest means (template regions for aligned
            crops); :meth:`compute` then returns a dict with ``"overall"`` and the regions.
        device: where the discriminator runs at first; ``.to()`` moves it with the metric.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: str | torch.nn.Module = "auto",
        weights=None,
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        batch_size: int = 32,
        amp: str | None = None,
        regions: bool = False,
        device: str | torch.device | None = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.scorer = IFQAMetric(
            model,
            weights,
            device=device,
            amp=amp,
            batch_size=batch_size,
            input_range=input_range,
        )
        self.regions = bool(regions)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if self.regions:
            self.add_state(
                "region_totals",
                default=torch.zeros(len(BREAKDOWN_REGIONS), dtype=torch.float64),
                dist_reduce_fx="sum",
            )

    def update(self, images: torch.Tensor) -> None:
        """Add a (B, C, H, W) batch of images in ``input_range``."""
        maps = self.scorer.maps(images.detach())
        scores = maps.mean((1, 2, 3))
        self.total += scores.double().sum().to(self.total.device)
        self.count += scores.numel()
        if self.regions:
            reg = self.scorer.region_scores(maps=maps)
            sums = torch.stack([reg[r].double().sum() for r in BREAKDOWN_REGIONS])
            self.region_totals += sums.to(self.region_totals.device)

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The mean score (float32), or a dict with ``overall`` and the regions."""
        if int(self.count) == 0:
            raise RuntimeError("IFQAScore.compute() called before any update()")
        overall = (self.total / self.count).float()
        if not self.regions:
            return overall
        means = (self.region_totals / self.count).float()
        return {"overall": overall, **{r: means[i] for i, r in enumerate(BREAKDOWN_REGIONS)}}
