"""Margin heads: ``get(name, num_classes=..., **kwargs)``, ``list()``, ``register(name)``."""

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead
from kerasface.heads.softmax_head import SoftmaxHead
from kerasface.heads.normface_head import NormFaceHead
from kerasface.heads.sphereface_head import SphereFaceHead
from kerasface.heads.cosface_head import CosFaceHead
from kerasface.heads.arcface_head import ArcFaceHead
from kerasface.heads.combined_margin_head import CombinedMarginHead
from kerasface.heads.li_arcface_head import LiArcFaceHead
from kerasface.heads.linearface_head import LinearFaceHead
from kerasface.heads.mv_softmax_head import MVSoftmaxHead
from kerasface.heads.arcnegface_head import ArcNegFaceHead
from kerasface.heads.curricularface_head import CurricularFaceHead
from kerasface.heads.npcface_head import NPCFaceHead
from kerasface.heads.lfrc_head import LFRCHead
from kerasface.heads.adacos_head import AdaCosHead
from kerasface.heads.adaface_head import AdaFaceHead
from kerasface.heads.magface_head import MagFaceHead
from kerasface.heads.subcenter_arcface_head import SubCenterArcFaceHead
from kerasface.heads.dataset_aware_head import DatasetAwareHead
from kerasface.heads.partial_fc_head import PartialFCHead
from kerasface.heads.sharded_head import ShardedHead

register = HEADS.register
get = HEADS.get
get_class = HEADS.get_class


def list():  # noqa: A001 - mirrors timm/keras-hub registries
    return HEADS.list()


__all__ = [
    "AdaCosHead", "AdaFaceHead", "ArcFaceHead", "ArcNegFaceHead", "CombinedMarginHead", "CosFaceHead",
    "CurricularFaceHead", "DatasetAwareHead", "LFRCHead", "LiArcFaceHead", "LinearFaceHead", "MVSoftmaxHead",
    "MagFaceHead", "MarginHead", "NPCFaceHead", "NormFaceHead", "PartialFCHead", "ShardedHead", "SoftmaxHead", "SphereFaceHead",
    "SubCenterArcFaceHead", "get", "get_class", "list", "register",
]
