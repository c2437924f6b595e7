"""Models, one small file each naming its paper; ``build_model`` picks by ``model.type``.

Ranking: dnn, wide_and_deep, deepfm, din, dcn_v2. Retrieval: two_tower (DSSM / YouTube-DNN; its user tower
reads the history pooled or through a GRU4Rec / SASRec encoder, ``encoders``), mind;
pair scorers searched by tree or graph (``pair``): tdm, nann.
"""

from __future__ import annotations

from rectool.programs.inputs import InputSpec
from rectool.train.config import Config
from rectool.train.models.base import Model
from rectool.train.models.dcn_v2 import DCNv2
from rectool.train.models.deepfm import DeepFM
from rectool.train.models.din import DIN
from rectool.train.models.dnn import DNN
from rectool.train.models.mind import MIND
from rectool.train.models.nann import NANN
from rectool.train.models.tdm import TDM
from rectool.train.models.two_tower import TwoTower
from rectool.train.models.wide_and_deep import WideAndDeep

MODELS: dict[str, type[Model]] = {
    "wide_and_deep": WideAndDeep,
    "deepfm": DeepFM,
    "din": DIN,
    "dcn_v2": DCNv2,
    "dnn": DNN,
    "two_tower": TwoTower,
    "mind": MIND,
    "tdm": TDM,
    "nann": NANN,
}


def build_model(cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                extras: dict | None = None) -> Model:
    return MODELS[cfg.model.type](cfg, spec, stats, sparse, extras)
