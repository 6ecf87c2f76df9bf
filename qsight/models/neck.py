"""The neck: backbone features → a small latent (what compressed and quantum heads read)."""

from __future__ import annotations

from torch import Tensor, nn

from qsight.models.params import NeckSpec


class Neck(nn.Module):
    """Dropout and a linear map to `dim`, with an optional GELU hidden layer before it."""

    def __init__(self, in_dim: int, spec: NeckSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(spec.dropout)]
        width = in_dim
        if spec.hidden is not None:
            layers += [nn.Linear(in_dim, spec.hidden), nn.GELU()]
            width = spec.hidden
        layers.append(nn.Linear(width, spec.dim))
        self.body = nn.Sequential(*layers)
        self.dim = spec.dim

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.body(features)
        return out
