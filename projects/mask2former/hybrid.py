"""Hybrid supervision (H-DETR): the criterion of a one-to-many query group.

The Influencer criterion needs no wrapper: ``InfluencerCriterion(..., queries_per_instance=k)``
gives each instance about k owners in its Sinkhorn plan, a change of marginals. A matcher cannot
do that; H-DETR repeats the ground truth k times and matches the group's queries to the copies.
:class:`RepeatedTargetsCriterion` does that for the Hungarian baseline, so that the A/B can tell
what the hybrid supervision gives either criterion.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from torch import Tensor, nn


class RepeatedTargetsCriterion(nn.Module):
    """``criterion(outputs, targets with every instance repeated `repeats` times)``.

    Args:
        criterion: any criterion of the core's call convention (``weight_dict``, ``num_classes``).
        repeats: copies of each instance (H-DETR's k).
    """

    def __init__(self, criterion: nn.Module, repeats: int):
        super().__init__()
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1; got {repeats}")
        self.criterion = criterion
        self.repeats = int(repeats)

    @property
    def weight_dict(self) -> Dict[str, float]:
        return self.criterion.weight_dict

    @property
    def num_classes(self) -> int:
        return self.criterion.num_classes

    def forward(self, outputs: Mapping, targets: Sequence[Mapping]) -> Dict[str, Tensor]:
        repeated: List[Dict[str, Tensor]] = []
        for target in targets:
            dims = [self.repeats] + [1] * (target["masks"].dim() - 1)
            repeated.append({"labels": target["labels"].repeat(self.repeats), "masks": target["masks"].repeat(*dims)})
        return self.criterion(outputs, repeated)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}"
