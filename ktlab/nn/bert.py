"""BERT from scratch, in one file you can read top to bottom (in the spirit of nanoGPT).

    input_ids, token_type_ids
        -> BertEmbeddings: word + position + token type, LayerNorm, dropout
        -> BertEncoder: num_hidden_layers x BertLayer
               attention:    h = LayerNorm(h + Dropout(W_o MultiHead(h)))        (post-LN)
               feed-forward: h = LayerNorm(h + Dropout(W_2 GELU(W_1 h)))
        -> last_hidden_state (batch, T, hidden)
        -> BertPooler: tanh(W_p h[:, 0])                  (the [CLS] vector, used by NSP)
    heads (BertForPreTraining):
        cls.predictions: dense + GELU + LayerNorm, then a decoder whose weight *is* the word
                         embedding matrix (tied), plus a per-token bias -> MLM logits over the vocab
        cls.seq_relationship: Linear(hidden, 2) on the pooled [CLS] -> IsNext / NotNext

Every parameter carries the name it has in ``transformers``' ``BertModel`` /
``BertForPreTraining``, so :func:`from_hf` copies a Hugging Face checkpoint one tensor at a time
and ``to_hf()`` exports back; ``tests/test_nn_bert.py`` checks that the outputs and every
layer's attention probabilities agree with ``transformers`` within 1e-5 on the MiniLM teacher.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ktlab.nn.attention import (LearnedPositionEmbedding, MultiHeadSelfAttention,
                                SinusoidalPositionEmbedding, padding_mask)

__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "EncoderOutput", "PreTrainingOutput",
           "from_hf", "load_hf_state_dict"]

IGNORE_INDEX = -100


@dataclasses.dataclass
class BertConfig:
    """The hyper-parameters of a BERT. Defaults are BERT-base; :meth:`tiny` is for tests."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    #: "absolute" = learned (BERT) or "sinusoidal" (fixed, Vaswani et al.; not exportable to HF)
    position_embedding_type: str = "absolute"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.position_embedding_type not in ("absolute", "sinusoidal"):
            raise ValueError(f"position_embedding_type must be 'absolute' or 'sinusoidal', got "
                             f"{self.position_embedding_type!r}")

    @classmethod
    def tiny(cls, vocab_size: int = 30522, **overrides: Any) -> "BertConfig":
        """A 2-layer, 128-wide BERT: trains from scratch on a CPU in minutes."""
        base = dict(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=512, max_position_embeddings=128)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf(cls, hf_config: Any) -> "BertConfig":
        """From a ``transformers.BertConfig`` (or a dict such as a parsed config.json)."""
        get = (hf_config.get if isinstance(hf_config, dict)
               else lambda k, d=None: getattr(hf_config, k, d))
        if get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT config (model_type={get('model_type')!r}); ktlab.nn.bert "
                             "loads BERT-architecture checkpoints only")
        act = get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"hidden_act={act!r} is not supported (ktlab's BERT uses exact GELU)")
        pos = get("position_embedding_type", "absolute") or "absolute"
        if pos != "absolute":
            raise ValueError(f"position_embedding_type={pos!r} is not supported; only absolute")
        kwargs = {f.name: get(f.name) for f in dataclasses.fields(cls) if get(f.name) is not None}
        return cls(**kwargs)

    def to_hf(self) -> Any:
        if self.position_embedding_type != "absolute":
            raise ValueError("transformers' BERT has no sinusoidal positions; only a config with "
                             "position_embedding_type='absolute' can be exported")
        from transformers import BertConfig as HFBertConfig
        return HFBertConfig(**dataclasses.asdict(self), hidden_act="gelu")


@dataclasses.dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    pooler_output: Optional[torch.Tensor] = None
    #: embeddings output + each layer's output, when requested
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    #: each layer's (batch, heads, T, T) attention probabilities, when requested
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclasses.dataclass
class PreTrainingOutput:
    prediction_logits: torch.Tensor
    seq_relationship_logits: torch.Tensor
    loss: Optional[torch.Tensor] = None
    mlm_loss: Optional[torch.Tensor] = None
    nsp_loss: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


# --------------------------------------------------------------------------------------------
# Building blocks (names = transformers' names)
# --------------------------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    """word + position + token type (segment A/B), then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        if config.position_embedding_type == "sinusoidal":
            self.position_embeddings: nn.Module = SinusoidalPositionEmbedding(
                config.max_position_embeddings, config.hidden_size)
        else:
            self.position_embeddings = LearnedPositionEmbedding(config.max_position_embeddings,
                                                                config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_positions = config.max_position_embeddings

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings="
                             f"{self.max_positions}; truncate the input (tokenizer max_length)")
        positions = torch.arange(length, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(positions))
        return self.dropout(self.LayerNorm(x))


class BertSelfOutput(nn.Module):
    """Output projection of attention, then residual + LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(context)))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        # ``self.self`` looks odd but is transformers' name: attention.self.query.weight, ...
        self.self = MultiHeadSelfAttention(config.hidden_size, config.num_attention_heads,
                                           config.attention_probs_dropout_prob)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        context, probs = self.self(hidden, mask, need_weights)
        return self.output(context, hidden), probs


class BertIntermediate(nn.Module):
    """First half of the feed-forward block: expand to ``intermediate_size`` (4x) and GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class BertOutput(nn.Module):
    """Second half of the feed-forward block: project back, residual + LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(hidden)))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor],
                need_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        hidden, probs = self.attention(hidden, mask, need_weights)
        return self.output(self.intermediate(hidden), hidden), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """tanh(W h_[CLS]): BERT's sentence vector, trained by next-sentence prediction."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm = identity."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------

class BertModel(nn.Module):
    """Embeddings + encoder + pooler; state-dict keys equal ``transformers.BertModel``'s."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> EncoderOutput:
        """``attention_mask``: ``(batch, T)``, 1 for tokens, 0 for padding (``None`` = no padding).

        With ``output_attentions`` every layer takes the explicit attention path and returns its
        probabilities; otherwise the fused ``F.scaled_dot_product_attention`` kernel runs."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got {tuple(input_ids.shape)}")
        hidden = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = padding_mask(attention_mask, hidden.dtype)
        all_hidden = [hidden] if output_hidden_states else None
        all_probs = [] if output_attentions else None
        for layer in self.encoder.layer:
            hidden, probs = layer(hidden, mask, output_attentions)
            if all_probs is not None:
                all_probs.append(probs)
            if all_hidden is not None:
                all_hidden.append(hidden)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(hidden, pooled, tuple(all_hidden) if all_hidden else None,
                             tuple(all_probs) if all_probs is not None else None)

    # -- Hugging Face interop ---------------------------------------------------------------
    @classmethod
    def from_hf(cls, model_or_path: Any) -> "BertModel":
        """Copy the encoder (and pooler) of any HF BERT checkpoint: a loaded
        ``transformers`` model, a local folder, ``"minilm"`` or a hub name."""
        config, state = load_hf_state_dict(model_or_path)
        encoder = {k: v for k, v in state.items() if not k.startswith("cls.")}
        model = cls(config, add_pooling_layer=any(k.startswith("pooler.") for k in encoder))
        _load_exact(model, encoder, "BertModel")
        return model

    def to_hf(self) -> Any:
        """Export to a ``transformers.BertModel`` (eval mode) with identical weights."""
        import transformers
        hf = transformers.BertModel(self.config.to_hf(), add_pooling_layer=self.pooler is not None)
        hf.load_state_dict(self.state_dict(), strict=True)
        return hf.eval()


# --------------------------------------------------------------------------------------------
# Pre-training heads
# --------------------------------------------------------------------------------------------

class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """The MLM head. ``decoder.weight`` is *the same tensor* as the word embeddings once tied
    (see :meth:`BertForPreTraining.tie_weights`): an output token's score is the dot product of
    the transformed hidden state with that token's input embedding, plus a per-token bias. Tying
    saves ``vocab x hidden`` parameters (23M in BERT-base) and helps rare words."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self.decoder.weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(nn.Module):
    """BERT with its two pre-training heads: masked-LM (tied) and next-sentence prediction."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.cls.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.tie_weights()

    def tie_weights(self) -> None:
        """Make the MLM decoder share the word-embedding matrix (one Parameter, two uses)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    @property
    def is_tied(self) -> bool:
        return (self.cls.predictions.decoder.weight.data_ptr()
                == self.bert.embeddings.word_embeddings.weight.data_ptr())

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                next_sentence_label: Optional[torch.Tensor] = None, *,
                output_attentions: bool = False,
                output_hidden_states: bool = False) -> PreTrainingOutput:
        """``labels``: token ids at masked positions, -100 elsewhere (MLM loss only there).
        ``next_sentence_label``: 0 = IsNext, 1 = NotNext (transformers' convention).
        ``loss`` is the sum of the losses that were given labels."""
        out = self.bert(input_ids, attention_mask, token_type_ids,
                        output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
        logits = self.cls.predictions(out.last_hidden_state)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)
        mlm_loss = nsp_loss = None
        if labels is not None:
            mlm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX)
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label.reshape(-1))
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        loss = sum(losses) if losses else None
        return PreTrainingOutput(logits, nsp_logits, loss, mlm_loss, nsp_loss,
                                 out.hidden_states, out.attentions)

    @classmethod
    def from_encoder(cls, encoder: BertModel) -> "BertForPreTraining":
        """Put *new* pre-training heads on an existing encoder (e.g. MiniLM, which ships
        without them): the MLM transform and NSP layer start random, the decoder is tied to the
        encoder's word embeddings, and the output bias starts at zero."""
        if encoder.pooler is None:
            raise ValueError("NSP needs the pooler; build the encoder with add_pooling_layer=True")
        model = cls(encoder.config)
        model.bert = encoder
        model.tie_weights()
        return model

    @classmethod
    def from_hf(cls, model_or_path: Any, *, allow_new_heads: bool = False) -> "BertForPreTraining":
        """Load an HF BERT with its heads (``BertForPreTraining``/``BertForMaskedLM`` checkpoints).
        A checkpoint without an MLM head (MiniLM) raises unless ``allow_new_heads``; a missing
        NSP head (``BertForMaskedLM``) is always created fresh."""
        config, state = load_hf_state_dict(model_or_path)
        has_mlm = any(k.startswith("cls.predictions") for k in state)
        if not has_mlm and not allow_new_heads:
            raise ValueError(f"{_describe(model_or_path)} has no MLM head (no cls.predictions.*); "
                             "pass allow_new_heads=True to build a new tied head, or use "
                             "BertModel.from_hf for the encoder alone")
        model = cls(config)
        body = {k: v for k, v in state.items() if not k.startswith("cls.")}
        _load_exact(model.bert, body, "BertModel")
        heads = {k[len("cls."):]: v for k, v in state.items() if k.startswith("cls.")}
        heads.pop("predictions.decoder.weight", None)  # tied: it *is* the word embeddings
        if "predictions.decoder.bias" in heads:  # an older alias of predictions.bias
            heads.setdefault("predictions.bias", heads["predictions.decoder.bias"])
            heads.pop("predictions.decoder.bias")
        missing, unexpected = model.cls.load_state_dict(heads, strict=False)
        missing = [k for k in missing if k != "predictions.decoder.weight"]
        if unexpected:
            raise ValueError(f"unexpected head parameters in {_describe(model_or_path)}: {unexpected}")
        if has_mlm and [k for k in missing if k.startswith("predictions.")]:
            raise ValueError(f"incomplete MLM head in {_describe(model_or_path)}: missing {missing}")
        model.tie_weights()
        return model

    def to_hf(self) -> Any:
        """Export to ``transformers.BertForPreTraining`` (tied, eval mode)."""
        import transformers
        hf = transformers.BertForPreTraining(self.config.to_hf())
        state = {f"bert.{k}": v for k, v in self.bert.state_dict().items()}
        state.update({f"cls.{k}": v for k, v in self.cls.state_dict().items()})
        state["cls.predictions.decoder.bias"] = self.cls.predictions.bias  # HF aliases the bias
        hf.load_state_dict(state, strict=True)
        hf.tie_weights()
        return hf.eval()


# --------------------------------------------------------------------------------------------
# Reading Hugging Face checkpoints
# --------------------------------------------------------------------------------------------

_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _describe(src: Any) -> str:
    return type(src).__name__ if isinstance(src, nn.Module) else repr(str(src))


def load_hf_state_dict(model_or_path: Any) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """``(config, state_dict)`` with keys relative to the encoder (``embeddings.*``,
    ``encoder.*``, ``pooler.*``) plus any ``cls.*`` heads, from a ``transformers`` BERT model,
    a checkpoint folder, ``"minilm"`` or a hub name. Buffers (``position_ids``) are dropped."""
    if isinstance(model_or_path, nn.Module):
        hf_config = getattr(model_or_path, "config", None)
        if hf_config is None:
            raise TypeError(f"{type(model_or_path).__name__} has no .config; pass a transformers "
                            "BERT model or a checkpoint path")
        config = BertConfig.from_hf(hf_config)
        raw = model_or_path.state_dict()
    elif isinstance(model_or_path, (str, Path)):
        from ktlab.models import resolve_teacher
        folder = Path(resolve_teacher(str(model_or_path)))
        if not folder.is_dir():  # a hub id: let transformers fetch it into the cache
            from huggingface_hub import snapshot_download
            folder = Path(snapshot_download(str(model_or_path),
                                            allow_patterns=["config.json", "*.safetensors",
                                                            "*.bin", "*.json"]))
        config = BertConfig.from_hf(json.loads((folder / "config.json").read_text()))
        raw = _read_weights(folder)
    else:
        raise TypeError(f"from_hf expects a transformers model or a path/name, got "
                        f"{type(model_or_path).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key.startswith("bert."):
            key = key[len("bert."):]
        if key in _BUFFERS or not (key.startswith(("embeddings.", "encoder.", "pooler.", "cls."))):
            continue  # buffers, or heads we do not model (classifier.*, qa_outputs.*)
        state[key] = value.detach().to(torch.float32) if value.is_floating_point() else value
    if not any(k.startswith("encoder.layer.") for k in state):
        raise ValueError(f"{_describe(model_or_path)} holds no BERT encoder weights "
                         "(no encoder.layer.* keys)")
    return config, state


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file() or index.is_file():
        from safetensors.torch import load_file
        files = ([single] if single.is_file() else
                 sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()}))
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(str(f)))
        return out
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(str(legacy), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")


def _load_exact(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match ktlab's {what}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (is it a BERT-architecture checkpoint?)")


def from_hf(model_or_path: Any) -> Union[BertModel, BertForPreTraining]:
    """Load an HF BERT: :class:`BertForPreTraining` when the checkpoint has an MLM head,
    otherwise the bare :class:`BertModel` (MiniLM). Returned in eval mode."""
    _, state = load_hf_state_dict(model_or_path)
    if any(k.startswith("cls.predictions") for k in state):
        return BertForPreTraining.from_hf(model_or_path).eval()
    return BertModel.from_hf(model_or_path).eval()
