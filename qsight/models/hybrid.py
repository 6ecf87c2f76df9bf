"""HybridModel: backbone → (neck) → named heads → combiner, with stage semantics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from torch import Tensor, nn

from qsight.errors import BadInputError
from qsight.metric_names import ENSEMBLE
from qsight.models.capacity import count_parameters, matched_mlp, mlp_parameters
from qsight.models.combiner import Combiner, GatedCombiner, build_combiner
from qsight.models.neck import Neck
from qsight.models.output import ModelOutput
from qsight.models.params import MlpHeadParams
from qsight.models.stages import (
    StageLike,
    check_names,
    ensemble_nll,
    frozen_upstream,
    head_losses,
    upstream_of,
    weighted_total,
)

if TYPE_CHECKING:
    from qsight.config.spec import ModelSpec
    from registry import Params, Registry

_HEADS = "heads."
log = logging.getLogger("qsight.models")


class HybridModel(nn.Module):
    """Per-head logits of the active heads and their ensemble.

    Submodules are addressed by the names stages use: ``backbone``, ``neck``
    (when present), ``heads.<name>``, ``combiner``. Before any `set_stage`,
    every module trains and every head is active.

    Loss: Σ over active heads of weight × cross-entropy. When the combiner has
    learnable gates and is in the stage's ``train`` (and more than one head is
    active), the ensemble NLL is added, computed on *detached* head logits: it
    trains the gates only, so each head's gradient comes from its own weighted
    loss and the gates cannot pull the heads toward one another.
    """

    neck: nn.Module | None

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, nn.Module],
        head_inputs: Mapping[str, str],
        combiner: Combiner,
        neck: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_module("neck", neck)
        self.heads = nn.ModuleDict(dict(heads))
        self.combiner = combiner
        self.head_inputs = dict(head_inputs)
        self._active: tuple[str, ...] = tuple(self.heads)
        self._trainable: frozenset[str] = frozenset(self.module_names())
        self._loss_weights: dict[str, float] = {}

    # -- names ---------------------------------------------------------------
    def module_names(self) -> list[str]:
        """Names a stage may list in ``train``."""
        names = ["backbone"] + (["neck"] if self.neck is not None else [])
        return names + [_HEADS + h for h in self.heads] + ["combiner"]

    def get_module(self, name: str) -> nn.Module:
        """The submodule a stage calls `name`."""
        check_names("module", [name], self.module_names())
        if name.startswith(_HEADS):
            return self.heads[name[len(_HEADS) :]]
        module: nn.Module = getattr(self, name)
        return module

    @property
    def active_heads(self) -> tuple[str, ...]:
        """The heads computed, returned and combined now (in model order)."""
        return self._active

    @property
    def loss_weights(self) -> dict[str, float]:
        """Per-head loss weights of the current stage (missing ones are 1)."""
        return dict(self._loss_weights)

    def trainable_modules(self) -> list[str]:
        """Modules named in the current stage's ``train``."""
        return [n for n in self.module_names() if n in self._trainable]

    def frozen_modules(self) -> list[str]:
        """Modules outside the current stage's ``train`` (eval mode, no gradient)."""
        return [n for n in self.module_names() if n not in self._trainable]

    # -- forward -------------------------------------------------------------
    def features(self, images: Tensor) -> dict[str, Tensor]:
        """The inputs heads read: ``backbone`` features and, with a neck, ``neck`` latents."""
        feats = {"backbone": self.backbone(images)}
        if self.neck is not None:
            feats["neck"] = self.neck(feats["backbone"])
        return feats

    def forward_features(self, feats: Mapping[str, Tensor]) -> ModelOutput:
        """Active heads and ensemble from `features` output (the neck is run if ``neck`` is absent)."""
        if self.neck is not None and "neck" not in feats:
            feats = {**feats, "neck": self.neck(feats["backbone"])}
        logits = {h: self.heads[h](feats[self.head_inputs[h]]) for h in self._active}
        return ModelOutput(heads=logits, ensemble=self.combiner(logits))

    def forward(self, images: Tensor) -> ModelOutput:
        return self.forward_features(self.features(images))

    # -- stages --------------------------------------------------------------
    def set_stage(self, stage: StageLike) -> None:
        """Apply a stage fully: requires_grad, train/eval modes, active heads, loss weights."""
        check_names("module", stage.train, self.module_names())
        check_names("head", stage.heads, list(self.heads))
        self._trainable = frozenset(stage.train)
        for name in self.module_names():
            self.get_module(name).requires_grad_(name in self._trainable)
        self.set_active(stage.heads)
        self._loss_weights = {str(k): float(v) for k, v in stage.loss_weights.items()}
        self.train(self.training)

    def set_active(self, heads: Sequence[str]) -> None:
        """Only these heads are run, returned and combined."""
        if not heads:
            raise BadInputError("at least one head must be active")
        check_names("head", heads, list(self.heads))
        chosen = set(heads)
        self._active = tuple(h for h in self.heads if h in chosen)

    def train(self, mode: bool = True) -> Self:
        """Set the mode; frozen modules stay in eval mode (no BatchNorm updates, no dropout)."""
        super().train(mode)
        for name in self.frozen_modules():
            self.get_module(name).eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train now: those of ``train`` modules that the active heads use.

        Inactive heads, the gates of inactive heads and a neck no active head
        reads are left out (they get no gradient anyway).
        """
        return [p for group in self.trainable_groups().values() for p in group]

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """`trainable_parameters` by the module (as ``train`` names it) they belong to; no empty groups."""
        used = upstream_of(self.head_inputs, self._active) | {_HEADS + h for h in self._active}
        groups: dict[str, list[nn.Parameter]] = {}
        for name in self.trainable_modules():
            if name == "combiner":
                params = list(self.combiner.parameters_for(self._active))
            elif name in used:
                params = list(self.get_module(name).parameters())
            else:
                continue
            params = [p for p in params if p.requires_grad]
            if params:
                groups[name] = params
        return groups

    def has_unused_trainable(self) -> bool:
        """Whether some ``requires_grad`` parameter gets no gradient (DDP: find_unused_parameters)."""
        used = {id(p) for p in self.trainable_parameters()}
        return any(p.requires_grad and id(p) not in used for p in self.parameters())

    def frozen_upstream(self, stage: StageLike | None = None) -> bool:
        """True when nothing upstream of the (stage's or active) heads' inputs trains."""
        if stage is None:
            return frozen_upstream(self.head_inputs, self._active, tuple(self._trainable))
        return frozen_upstream(self.head_inputs, stage.heads, stage.train)

    def combiner_trains(self) -> bool:
        """Whether the ensemble NLL enters the loss (learnable gates, in ``train``, ≥ 2 heads)."""
        has_gates = any(True for _ in self.combiner.parameters_for(self._active))
        return "combiner" in self._trainable and has_gates and len(self._active) > 1

    # -- loss and hooks ------------------------------------------------------
    def loss(
        self, output: ModelOutput, labels: Tensor, class_weights: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss to backpropagate, and detached per-head (and ``ensemble``) losses to log."""
        missing = [h for h in self._active if h not in output.heads]
        if missing:
            raise ValueError(f"output lacks active head(s) {missing}")
        logits = {h: output.heads[h] for h in self._active}
        losses = head_losses(logits, labels, class_weights)
        total = weighted_total(losses, self._loss_weights)
        if self.combiner_trains():
            detached = {h: v.detach() for h, v in logits.items()}
            total = total + ensemble_nll(self.combiner(detached), labels, class_weights)
        logged = {h: v.detach() for h, v in losses.items()}
        logged[ENSEMBLE] = ensemble_nll(output.ensemble.detach(), labels, class_weights)
        return total, logged

    def set_anneal(self, temperature: float | None, noise: float) -> list[str]:
        """Forward annealing to every head with a ``set_anneal`` method; returns their names."""
        annealed = []
        for name, head in self.heads.items():
            hook = getattr(head, "set_anneal", None)
            if callable(hook):
                hook(temperature, noise)
                annealed.append(name)
        return annealed

    def combiner_weights(self) -> dict[str, float]:
        """Current ensemble weight of each active head (for logging)."""
        if isinstance(self.combiner, GatedCombiner):
            return self.combiner.weights(self._active)
        return {h: 1.0 / len(self._active) for h in self._active}


def build_model(spec: ModelSpec, num_classes: int) -> HybridModel:
    """Build the model a validated `ModelSpec` describes, for `num_classes` classes."""
    from qsight.components import BACKBONES, HEADS

    if num_classes < 2:
        raise BadInputError(f"a classifier needs at least 2 classes (got {num_classes})")
    backbone = _build(BACKBONES, spec.backbone, "model.backbone")
    dim = getattr(backbone, "feature_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise BadInputError(f"model.backbone: the backbone exposes no positive int `feature_dim` ({dim!r})")
    neck = Neck(dim, spec.neck) if spec.neck is not None else None
    built: dict[str, nn.Module] = {}
    inputs = {name: str(getattr(params, "input", "backbone")) for name, params in spec.heads.items()}
    matching = [n for n, p in spec.heads.items() if getattr(p, "match_params", None) is not None]
    for name in [n for n in spec.heads if n not in matching] + matching:  # sized heads after their targets
        params = spec.heads[name]
        if name in matching:
            params = _matched(name, params, built, inputs[name], dim, neck, num_classes)
        built[name] = _build_head(HEADS, name, params, inputs[name], dim, neck, num_classes)
    heads = {name: built[name] for name in spec.heads}
    return HybridModel(backbone, heads, inputs, build_combiner(spec.combiner, list(heads)), neck)


def _matched(name: str, params: Params, built: Mapping[str, nn.Module], source: str, dim: int, neck: Neck | None,
             num_classes: int) -> Params:
    """The head's params with its width chosen to match ``match_params``'s parameter count."""
    where = f"model.heads.{name}"
    target = str(getattr(params, "match_params", ""))
    if not isinstance(params, MlpHeadParams):
        raise BadInputError(f"{where}.match_params: only 'mlp' heads can be sized to another head")
    if target not in built:
        raise BadInputError(f"{where}.match_params: no head {target!r} to match")
    in_dim = neck.dim if source == "neck" and neck is not None else dim
    count = count_parameters(built[target])
    sized = matched_mlp(params, in_dim, num_classes, count, where)
    got = mlp_parameters(in_dim, num_classes, sized.hidden, sized.layers)
    log.info("head %s: hidden %d, %d parameters (head %s: %d)", name, sized.hidden, got, target, count)
    return sized


def _build_head(
    registry: Registry[nn.Module],
    name: str,
    params: Params,
    source: str,
    dim: int,
    neck: Neck | None,
    num_classes: int,
) -> nn.Module:
    where = f"model.heads.{name}"
    if "." in name or hasattr(nn.ModuleDict(), name) or hasattr(nn.ParameterDict(), name):
        raise BadInputError(f"{where}: {name!r} cannot name a head (contains '.' or is reserved)")
    if source == "neck" and neck is None:
        raise BadInputError(f"{where}: reads 'neck' but the neck is off")
    in_dim = neck.dim if source == "neck" and neck is not None else dim
    return _build(registry, params, where, in_dim, num_classes)


def _build(registry: Registry[nn.Module], params: Params, where: str, *args: Any) -> nn.Module:
    """Look up the component `params.type` names and build it."""
    from registry import RegistryError

    kind = getattr(params, "type", None)
    try:
        entry = registry.get(str(kind))
    except RegistryError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    return entry.build(params, *args)
