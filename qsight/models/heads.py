"""Classical heads: features (B, in_dim) → class logits (B, num_classes)."""

from __future__ import annotations

from torch import Tensor, nn

from qsight.models.params import LinearHeadParams, MlpHeadParams


class LinearHead(nn.Module):
    """Dropout, then one linear layer."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.fc(self.dropout(features))
        return out


class MlpHead(nn.Module):
    """`layers` × (linear, GELU, dropout), then a linear layer to the classes."""

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int = 64, layers: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.fc(self.body(features))
        return out


def linear_head(params: LinearHeadParams, in_dim: int, num_classes: int) -> LinearHead:
    """Factory of the `linear` head."""
    return LinearHead(in_dim, num_classes, params.dropout)


def mlp_head(params: MlpHeadParams, in_dim: int, num_classes: int) -> MlpHead:
    """Factory of the `mlp` head."""
    return MlpHead(in_dim, num_classes, params.hidden, params.layers, params.dropout)
