"""Class balancing: inverse-frequency class weights (for the loss) and per-sample weights (for the sampler).

One normalisation for both: a present class ``c`` with ``n_c`` of the ``n`` training samples gets
``n / (k * n_c)``, ``k`` being the number of present classes. Every present class then carries the
same total weight, the mean weight over the training samples is 1, and a balanced set gets 1.0 each.

A class absent from the training labels gets the neutral weight 1.0: no training sample has it, so
its weight cannot change training, and 1.0 keeps a loss over other labels (validation) finite and
unscaled, where 0 would drop that class and ``n / (k * 0)`` would be infinite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """How many samples each class has."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return [int(c) for c in counts]


def class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """Inverse-frequency weights ``n / (k * n_c)`` over the `k` present classes; 1.0 for an absent class."""
    counts = np.asarray(class_counts(labels, num_classes), dtype=np.float64)
    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


def sample_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """Each sample's drawing weight (its class weight): every present class is drawn equally often."""
    weights = class_weights(labels, num_classes)
    return [weights[int(y)] for y in labels]
