"""The ``model`` section of a training config: one frozen class per model type, told apart by ``type``.

Ranking models (dnn, wide_and_deep, deepfm, din, dcn_v2) learn from ``data.label``; retrieval models
(two_tower, mind) and pair scorers (tdm, nann) learn from the target item id (``needs_label``
False). ``rectool.train.config.Config`` holds one ``ModelConfig``; the model classes of
``rectool.train.models`` are built from it.

    model: {type: two_tower, user_group: user, item_group: item, output_dim: 64}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rectool.train.feature_config import Strict


class MLPConfig(Strict):
    hidden_units: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = True
    activation: Literal["relu", "gelu", "prelu", "dice"] = "relu"


class _ModelBase(Strict):
    needs_label: ClassVar[bool] = True  # learns from data.label (retrieval and pair models: from the target id)

    num_class: int = Field(default=1, ge=1, description="1: binary (BCE); >1: softmax over classes")
    deep: MLPConfig = Field(default_factory=MLPConfig)


class DNNConfig(_ModelBase):
    """A plain MLP over the ``deep`` group (DeepCTR's DNN): the baseline the other ranking models extend."""

    type: Literal["dnn"]


class WideAndDeepConfig(_ModelBase):
    type: Literal["wide_and_deep"]


class DeepFMConfig(_ModelBase):
    type: Literal["deepfm"]


class DINConfig(_ModelBase):
    type: Literal["din"]
    attention_units: list[int] = Field(default_factory=lambda: [64, 32])
    attention_softmax: bool = Field(default=False, description="the paper uses unnormalised weights")
    query: dict[str, str] = Field(
        description="sequence feature -> the candidate's feature it attends with, e.g. {hist_items: item_id}")


class DCNv2Config(_ModelBase):
    type: Literal["dcn_v2"]
    cross_layers: int = Field(default=3, ge=1)
    low_rank: int | None = Field(default=None, gt=0, description="low-rank cross matrices (the paper's DCN-Mix off)")
    structure: Literal["stacked", "parallel"] = "parallel"


class TowerConfig(Strict):
    hidden_units: list[int] = Field(default_factory=lambda: [256])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    activation: Literal["relu", "gelu", "prelu"] = "relu"


class NegativesConfig(Strict):
    sampler: Literal["none", "uniform", "popularity"] = Field(
        default="none", description="extra negatives shared by the batch, besides the in-batch ones")
    count: int = Field(default=0, ge=0)
    alpha: float = Field(default=0.75, ge=0, description="popularity sampler: weight = count ** alpha")
    items: str | None = Field(default=None, description="item catalogue (parquet) with the item tower's columns; "
                                                        "default: items/ beside data.train_input")


class RetrievalLossConfig(Strict):
    """How the towers are trained, over each row's target and its negatives (the other targets of the batch
    with ``in_batch``, plus ``negatives.count`` sampled items), scores s = u·v / temperature:

    * ``listwise`` (default): sampled softmax, cross-entropy of the target among its negatives, each
      negative's logit corrected by log-Q (``log_q``);
    * ``pointwise``: binary cross-entropy, the target labelled 1 and every negative 0, averaged over
      all these pairs (Torch-RecHub's point-wise mode);
    * ``pairwise``: BPR, -log σ(s⁺ - s⁻) averaged over the row's negatives, then over rows.

    ``log_q`` applies to ``listwise`` only (it corrects the softmax's sampling bias); the other two
    score the raw s. A negative equal to the row's target is left out in every mode.
    """

    mode: Literal["listwise", "pointwise", "pairwise"] = Field(
        default="listwise", description="listwise: sampled softmax; pointwise: BCE; pairwise: BPR")
    in_batch: bool = True
    log_q: bool = Field(default=True, description="listwise: subtract log(sampling probability) from each "
                                                  "negative's logit")
    temperature: float = Field(default=0.05, gt=0)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)

    @model_validator(mode="after")
    def _some_negatives(self) -> RetrievalLossConfig:
        if not self.in_batch and (self.negatives.sampler == "none" or self.negatives.count == 0):
            raise ValueError("with in_batch: false, give negatives.sampler and negatives.count")
        return self


class _RetrievalBase(Strict):
    needs_label: ClassVar[bool] = False

    user_group: str = "user"
    item_group: str = "item"
    item_id: str = Field(default="item_id", description="the column that identifies the target item")
    output_dim: int = Field(default=64, gt=0)
    user_tower: TowerConfig = Field(default_factory=TowerConfig)
    item_tower: TowerConfig = Field(default_factory=lambda: TowerConfig(hidden_units=[]))
    l2_normalize: bool = True
    loss: RetrievalLossConfig = Field(default_factory=RetrievalLossConfig)


class RepeatConfig(Strict):
    """A learned bonus for candidates the user already has in a history sequence (RepeatNet's
    repeat mode, Ren et al., AAAI 2019): score = u·v + bonus[min(count, max_count)]."""

    history: str = Field(description="user-group sequence feature (raw item ids, compared with model.item_id)")
    max_count: int = Field(default=3, ge=1, le=64, description="occurrences in the history beyond this share a bonus")


class PoolingEncoderConfig(Strict):
    """The default user tower: each user-group sequence with combiner none pooled (``history_pooling``)."""

    type: Literal["pooling"] = "pooling"


class GRU4RecEncoderConfig(Strict):
    """GRU4Rec: a GRU over the history; the user state is the hidden state after the last valid step."""

    type: Literal["gru4rec"]
    history: str = Field(description="the user-group sequence feature (combiner none, most recent last) to encode")
    hidden_size: int | None = Field(default=None, gt=0, description="GRU width (default: the history's "
                                                                     "embedding_dim)")
    layers: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="on the input embeddings and between layers")


class SASRecEncoderConfig(Strict):
    """SASRec: causal self-attention blocks with learned positions; the user state is the last valid step's output."""

    type: Literal["sasrec"]
    history: str = Field(description="the user-group sequence feature (combiner none, most recent last) to encode")
    blocks: int = Field(default=2, ge=1)
    heads: int = Field(default=1, ge=1, description="attention heads (must divide the history's embedding_dim)")
    ffn_dim: int | None = Field(default=None, gt=0, description="feed-forward width (default: embedding_dim)")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)


UserEncoderConfig = Annotated[PoolingEncoderConfig | GRU4RecEncoderConfig | SASRecEncoderConfig,
                              Field(discriminator="type")]


class TwoTowerConfig(_RetrievalBase):
    """DSSM / YouTube-DNN: user tower over user features and the pooled history, item tower over the item.

    Trained list-wise (sampled softmax, the default), point-wise (BCE) or pair-wise (BPR): ``loss.mode``,
    see ``RetrievalLossConfig``. ``user_encoder`` reads one history as a sequence instead of pooling it
    (GRU4Rec, SASRec: ``rectool.train.models.encoders``)::

        user_encoder: {type: sasrec, history: hist_items, blocks: 2, heads: 1, dropout: 0.2}
    """

    type: Literal["two_tower"]
    history_pooling: Literal["mean", "attention"] = Field(
        default="attention", description="how user-group sequences with combiner none are pooled")
    history_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="training: drop each history item "
                                   "of the pooled sequences with this probability (input dropout, as Mult-VAE)")
    repeat: RepeatConfig | None = Field(
        default=None, description="add a learned bonus to items already in the user's history (repeat "
                                  "consumption: re-buys, carted items); retrieve applies it to those items")
    user_encoder: UserEncoderConfig = Field(
        default_factory=PoolingEncoderConfig, description="pooling (default), gru4rec or sasrec: how the user "
                                                          "tower reads the history sequence")


class MINDConfig(_RetrievalBase):
    """MIND: several interest capsules per user by dynamic routing over the history."""

    type: Literal["mind"]
    history: str = Field(description="the user's item sequence feature (combiner none) to route over")
    interests: int = Field(default=4, ge=1)
    routing_iterations: int = Field(default=3, ge=1)
    pow_p: float = Field(default=1.0, ge=0, description="label-aware attention sharpness")
    dynamic_interests: bool = Field(default=True, description="K_u = max(1, min(K, log2(history length)))")


class _CandidateBase(Strict):
    needs_label: ClassVar[bool] = False

    candidate: str = Field(description="id feature whose column carries the candidate (item or tree node) id; "
                                       "its embedding is the attention query")
    history: str = Field(description="the user's item sequence feature (combiner none), sharing the candidate's "
                                     "embedding table")
    user_group: str | None = Field(default=None, description="more user features, concatenated before the MLP")
    attention_units: list[int] = Field(default_factory=lambda: [36])
    deep: MLPConfig = Field(default_factory=lambda: MLPConfig(hidden_units=[128, 64], batch_norm=False))


class TDMConfig(_CandidateBase):
    """TDM: a node scorer trained with layer-wise sampling over an item tree."""

    type: Literal["tdm"]
    tree: str = Field(description="tree directory from rectool tree init / tree cluster")
    layer_num_sample: list[int] = Field(description="negatives per tree level, root first (0)")
    windows: list[int] = Field(default_factory=lambda: [1, 1, 2, 4, 8, 16],
                               description="multi-window attention (most recent first); [] for one window")
    loss: Literal["binary", "softmax"] = Field(default="binary", description="softmax: per level over the "
                                                                             "positive and its negatives")
    node_features: list[str] = Field(
        default_factory=list, description="columns of the tree's node_feature/ table (tree init --attr-fields, "
                                          "--raw-attr-fields) added to every scored node's embedding: categorical "
                                          "columns embedded, float columns standardised and projected")


class NANNConfig(_CandidateBase):
    """NANN's scorer: target attention + MLP, sampled softmax with log-Q, optional adversarial training."""

    type: Literal["nann"]
    negatives: int = Field(default=200, ge=1, description="frequency-unigram negatives per batch")
    adv_eps: float = Field(default=0.0, ge=0, description="FGSM step on the candidate embedding (0: off)")
    adv_weight: float = Field(default=1.0, ge=0, description="weight of KL(clean || perturbed)")


ModelConfig = Annotated[WideAndDeepConfig | DeepFMConfig | DINConfig | DCNv2Config | DNNConfig | TwoTowerConfig
                        | MINDConfig | TDMConfig | NANNConfig, Field(discriminator="type")]
