"""``layers_to_freeze``: freeze the first N layer groups of a model (spec §1.7).

Azure lists its groups in the module names of its own model implementations; we build on timm,
so each Azure list is mapped onto timm's names, keeping Azure's group count (so the same N
freezes the same part of the network):

- ``resnet`` (resnet*, resnest*): ``(conv1., bn1.)``, ``layer1.`` … ``layer4.`` — same names.
- ``seresnext``: Azure's ``layer0`` is the stem (conv1 + bn1 + pool of the Cadene model); timm
  calls those ``conv1``/``bn1``, then ``layer1.`` … ``layer4.`` as Azure.
- ``mobilenetv2``: Azure's torchvision ``features.0`` … ``features.18`` are the stem conv, the 17
  inverted-residual blocks and the last 1x1 conv. timm groups the 17 blocks into stages
  ``blocks.<stage>.<i>`` (1, 2, 3, 4, 3, 3, 1 per stage), so ``features.k`` maps one to one onto
  ``conv_stem``/``bn1``, the k-th block in stage order, and ``conv_head``/``bn2``.
- ``vit`` / ``vit_large``: ``patch_embed`` (with timm's ``cls_token``/``pos_embed``, which are part
  of the embedding), then ``blocks.0.`` … ``blocks.11.`` (ViT-L: ``blocks.23.``).
- ``efficientnet`` (not in Azure's list): ``conv_stem``/``bn1``, then stages ``blocks.0.`` … ``6.``.
- ``yolov5_backbone``: ``backbone.0.`` … ``backbone.9.`` of our YOLOv5-style network (Azure's
  ``model.0.`` … ``model.9.``: the same ten backbone layers, stem to SPPF).
- ``yolov5_efficientnet_lite0`` (not in Azure's list): its backbone's ``efficientnet`` groups
  (stem, stages 0 … 6) then the SPPF.

Prefixes end with a dot so that ``blocks.1.`` does not also freeze ``blocks.10``.
"""

from __future__ import annotations

from torch import nn

from visionauto.errors import ConfigError

LayerGroup = tuple[str, ...]

_MOBILENETV2_STAGE_DEPTHS = (1, 2, 3, 4, 3, 3, 1)


def _vit_groups(depth: int) -> list[LayerGroup]:
    return [("patch_embed.", "cls_token", "pos_embed")] + [(f"blocks.{i}.",) for i in range(depth)]


def _resnet_groups() -> list[LayerGroup]:
    return [("conv1.", "bn1.")] + [(f"layer{i}.",) for i in range(1, 5)]


def _mobilenetv2_groups() -> list[LayerGroup]:
    blocks = [
        (f"blocks.{stage}.{i}.",)
        for stage, depth in enumerate(_MOBILENETV2_STAGE_DEPTHS)
        for i in range(depth)
    ]
    return [("conv_stem.", "bn1.")] + blocks + [("conv_head.", "bn2.")]


# Group name (ModelSpec.layer_groups) → ordered groups; each group is a tuple of name prefixes.
LAYER_GROUPS: dict[str, list[LayerGroup]] = {
    "resnet": _resnet_groups(),
    "seresnext": _resnet_groups(),
    "mobilenetv2": _mobilenetv2_groups(),
    "vit": _vit_groups(12),
    "vit_large": _vit_groups(24),
    "efficientnet": [("conv_stem.", "bn1.")] + [(f"blocks.{i}.",) for i in range(7)],
    "yolov5_backbone": [(f"backbone.{i}.",) for i in range(10)],
    "yolov5_efficientnet_lite0": [("backbone.body.conv_stem.", "backbone.body.bn1.")]
    + [(f"backbone.body.blocks.{i}.",) for i in range(7)]
    + [("backbone.sppf.",)],
}


def freeze_layers(model: nn.Module, group: str | None, n: int) -> list[str]:
    """Freeze (``requires_grad=False``) the parameters of the first ``n`` layer groups.

    Args:
        model: the model whose parameters are named as timm names them.
        group: key into :data:`LAYER_GROUPS` (``ModelSpec.layer_groups``), None if unsupported.
        n: how many groups to freeze; 0 freezes nothing.

    Returns:
        The frozen name prefixes, in order (e.g. ``["conv1.", "bn1.", "layer1."]`` for resnet, n=2).

    Raises:
        ConfigError: ``n`` exceeds the number of groups, the model has no groups, or the model's
            parameter names do not follow the group's layout.
    """
    if n <= 0:
        return []
    if group is None:
        raise ConfigError(
            f"training.layers_to_freeze={n} is not supported for this model: its layer groups are "
            "unknown. Fix: remove layers_to_freeze, or use a catalog model (resnet*, resnest*, "
            "seresnext, mobilenetv2, vit*, efficientnet_lite0)."
        )
    groups = LAYER_GROUPS[group]
    if n > len(groups):
        raise ConfigError(
            f"training.layers_to_freeze={n} is too large: this model has {len(groups)} layer "
            f"groups ({group}). Fix: use a value between 0 and {len(groups)}."
        )
    prefixes = [p for g in groups[:n] for p in g]
    params = dict(model.named_parameters())
    for prefix in prefixes:
        matched = [p for name, p in params.items() if name.startswith(prefix)]
        # A prefix matching nothing means the model does not have the layout we assumed.
        if not matched and not prefix.startswith(("cls_token", "pos_embed")):
            raise ConfigError(
                f"training.layers_to_freeze={n} cannot be applied: the model has no parameters "
                f"under {prefix!r} (layer groups {group!r} do not fit it). Fix: remove "
                "layers_to_freeze for this model."
            )
        for p in matched:
            p.requires_grad_(False)
    return prefixes
