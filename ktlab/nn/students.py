"""Small students for distillation from a BERT teacher: BiLSTM, Kim CNN, tiny Transformer.

All three read the *teacher's* WordPiece ids, so a batch tokenised once feeds both the teacher and
the student, and the augmentation in :mod:`ktlab.augment` (``[MASK]`` replacement) is meaningful to
both. BiLSTM and CNN forward passes return plain logits ``(batch, num_labels)``; the tiny
Transformer is a Hugging Face ``BertForSequenceClassification`` (``.logits`` on its output) so that
:mod:`ktlab.transfer.layers` can copy teacher layers into it by parameter name.

Knowledge can also move through the *embedding table*: :func:`init_embeddings_from_teacher`
projects the teacher's input embeddings (vocab x 384 for MiniLM) down to the student's width with
PCA (fixed, then fine-tuned) or with a learned linear map over the frozen teacher table.

References: Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks" (BiLSTM + max/last pooling + ReLU MLP); Kim 2014, "Convolutional Neural Networks for
Sentence Classification" (filter widths 3/4/5, 100 maps each, max-over-time pooling).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

STUDENT_NAMES = ("bilstm", "cnn", "tiny")
POOLINGS = ("max", "mean", "last")
EMBEDDING_INITS = ("random", "pca", "linear")


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a student or teacher output (a tensor, or an HF output with ``.logits``)."""
    return output if isinstance(output, torch.Tensor) else output.logits


class ProjectedEmbedding(nn.Module):
    """A frozen teacher embedding table followed by a trainable linear map to the student width.

    The student learns *how to read* the teacher's word vectors instead of learning a table of its
    own: only ``teacher_dim x embed_dim`` new parameters (plus a bias) are trained."""

    def __init__(self, teacher_table: torch.Tensor, embed_dim: int, padding_idx: int = 0):
        super().__init__()
        self.table = nn.Embedding.from_pretrained(teacher_table.detach().clone().float(),
                                                  freeze=True, padding_idx=padding_idx)
        self.proj = nn.Linear(teacher_table.shape[1], embed_dim)
        self.embedding_dim = embed_dim
        self.num_embeddings = teacher_table.shape[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(input_ids))


class BiLSTMClassifier(nn.Module):
    """Tang et al. 2019: embeddings -> BiLSTM -> pooling over time -> ReLU MLP -> logits.

    ``pooling="max"`` takes the element-wise max over the non-padded time steps (robust and fast);
    ``"last"`` concatenates the final forward and backward states, as in the paper; ``"mean"``
    averages. Padding (``attention_mask == 0``) never leaks into the pooled vector.
    """

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 300,
                 hidden_size: int = 150, mlp_size: int = 200, num_layers: int = 1,
                 dropout: float = 0.1, pooling: str = "max", pad_token_id: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.embedding: nn.Module = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden_size, mlp_size), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(mlp_size, num_labels))

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                **_: Any) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        lengths = attention_mask.sum(1).clamp(min=1)
        x = self.dropout(self.embedding(input_ids))                      # (B, T, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=input_ids.shape[1])  # (B, T, 2H)
        mask = attention_mask[:, :, None].bool()
        if self.pooling == "max":
            pooled = out.masked_fill(~mask, float("-inf")).max(1).values
        elif self.pooling == "mean":
            pooled = (out * mask).sum(1) / lengths[:, None]
        else:  # last: final forward state and final backward state of the top layer
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return self.mlp(self.dropout(pooled))


class KimCNN(nn.Module):
    """Kim 2014: embeddings -> parallel 1-D convolutions (widths 3/4/5) -> ReLU -> max over time
    -> dropout -> linear. Sequences shorter than the widest filter are padded, never a crash."""

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 300,
                 num_filters: int = 100, kernel_sizes: Sequence[int] = (3, 4, 5),
                 dropout: float = 0.5, pad_token_id: int = 0):
        super().__init__()
        self.pad_token_id = pad_token_id
        self.kernel_sizes = tuple(kernel_sizes)
        self.embedding: nn.Module = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(num_filters * len(self.kernel_sizes), num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                **_: Any) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        short = max(self.kernel_sizes) - input_ids.shape[1]
        if short > 0:
            input_ids = nn.functional.pad(input_ids, (0, short), value=self.pad_token_id)
            attention_mask = nn.functional.pad(attention_mask, (0, short), value=0)
        x = self.embedding(input_ids) * attention_mask[:, :, None]       # zero the padding
        x = x.transpose(1, 2)                                            # (B, E, T)
        pooled = [torch.relu(conv(x)).max(dim=2).values for conv in self.convs]
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


class MeanPoolClassifier(nn.Module):
    """A BERT encoder + a linear head on the *masked mean* of its last hidden states.

    all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling: its mean-pooled vector
    already separates positive from negative reviews, while its ``[CLS]`` vector (what
    ``BertForSequenceClassification`` classifies) was never trained for that and needs many more
    steps to become useful. Parameter names follow HF (``bert.``, ``classifier.``), so
    :mod:`ktlab.transfer.layers` maps layers between two such models. Returns an HF
    ``SequenceClassifierOutput`` (``.logits``, ``.loss`` when ``labels`` are given, and the
    encoder's ``hidden_states``/``attentions`` when asked for, so it can teach layer by layer)."""

    base_model_prefix = "bert"

    def __init__(self, encoder: nn.Module, num_labels: int = 2, dropout: float = 0.1):
        super().__init__()
        self.bert = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def get_input_embeddings(self) -> nn.Module:
        return self.bert.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput
        if attention_mask is None:
            attention_mask = (input_ids != (self.config.pad_token_id or 0)).long()
        # the output_* flags reach the encoder only when set: not every encoder takes them
        flags = {k: True for k, on in (("output_hidden_states", output_hidden_states),
                                       ("output_attentions", output_attentions)) if on}
        enc = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids, **flags)
        hidden = enc.last_hidden_state
        mask = attention_mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits,
            hidden_states=getattr(enc, "hidden_states", None) if output_hidden_states else None,
            attentions=getattr(enc, "attentions", None) if output_attentions else None)


def tiny_bert_config(vocab_size: int, num_labels: int, hidden_size: int, num_layers: int,
                     num_heads: int, intermediate_size: Optional[int] = None,
                     max_position_embeddings: int = 512, dropout: float = 0.1,
                     pad_token_id: int = 0) -> Any:
    """The ``BertConfig`` of a small student Transformer (the teacher's parameter names)."""
    from transformers import BertConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      intermediate_size=intermediate_size or 4 * hidden_size,
                      max_position_embeddings=max_position_embeddings,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      num_labels=num_labels, pad_token_id=pad_token_id)


def tiny_transformer(vocab_size: int, num_labels: int = 2, hidden_size: int = 256,
                     num_layers: int = 4, num_heads: int = 4, intermediate_size: Optional[int] = None,
                     max_position_embeddings: int = 512, dropout: float = 0.1,
                     pad_token_id: int = 0, pooling: str = "cls") -> nn.Module:
    """A small BERT with randomly initialised weights: ``BertForSequenceClassification``
    (``pooling="cls"``) or a :class:`MeanPoolClassifier` over a ``BertModel`` (``"mean"``).

    Being a real HF BERT, it shares parameter names with the teacher, which is what lets
    :mod:`ktlab.transfer.layers` initialise it from chosen teacher layers (use the teacher's
    ``hidden_size`` for that)."""
    from transformers import BertForSequenceClassification, BertModel

    if pooling not in ("cls", "mean"):
        raise ValueError(f"unknown pooling {pooling!r} for the tiny Transformer; use 'cls' or "
                         "'mean'")

    config = tiny_bert_config(vocab_size, num_labels, hidden_size, num_layers, num_heads,
                              intermediate_size, max_position_embeddings, dropout, pad_token_id)
    if pooling == "mean":
        return MeanPoolClassifier(BertModel(config), num_labels, dropout)
    return BertForSequenceClassification(config)


def teacher_input_embeddings(teacher: nn.Module) -> torch.Tensor:
    """The teacher's word-embedding table (vocab x hidden), detached."""
    return teacher.get_input_embeddings().weight.detach()


def pca_project(table: torch.Tensor, dim: int) -> torch.Tensor:
    """Project the rows of ``table`` onto its top ``dim`` principal directions.

    PCA keeps the directions along which the teacher's word vectors differ most, so words the
    teacher treats alike stay close. The result is rescaled to a standard deviation of 0.5 so that
    LSTM/CNN inputs stay in the range their default initialisation expects. The SVD runs on at most
    ~20k evenly spaced rows (fast on CPU); all rows are projected."""
    if dim > table.shape[1]:
        raise ValueError(f"PCA cannot widen {table.shape[1]}-d teacher embeddings to {dim}; use "
                         "embedding_init='linear' or an embed_dim <= the teacher's hidden size")
    table = table.float()
    centred = table - table.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    projected = centred @ v[:dim].T
    return projected / projected.std() * 0.5


def init_embeddings_from_teacher(student: nn.Module, teacher_table: torch.Tensor,
                                 method: str = "pca") -> nn.Module:
    """Replace a BiLSTM/CNN student's embedding with knowledge from the teacher's table.

    ``"pca"``: the teacher table projected to ``embed_dim`` with PCA, then trained as usual.
    ``"linear"``: a :class:`ProjectedEmbedding` (frozen teacher table + trainable linear map).
    ``"random"``: leave the random initialisation (the baseline). Returns the student."""
    if method not in EMBEDDING_INITS:
        raise ValueError(f"unknown embedding_init {method!r}; choose one of {EMBEDDING_INITS}")
    emb = getattr(student, "embedding", None)
    if not isinstance(emb, nn.Embedding):
        raise TypeError("init_embeddings_from_teacher works on BiLSTMClassifier/KimCNN "
                        f"(an nn.Embedding named 'embedding'), not {type(student).__name__}")
    if emb.num_embeddings != teacher_table.shape[0]:
        raise ValueError(f"student vocabulary ({emb.num_embeddings}) differs from the teacher's "
                         f"({teacher_table.shape[0]}); build the student with the teacher's "
                         "tokenizer (vocab_size=len(tokenizer))")
    if method == "pca":
        with torch.no_grad():
            emb.weight.copy_(pca_project(teacher_table, emb.embedding_dim))
            if emb.padding_idx is not None:
                emb.weight[emb.padding_idx].zero_()
    elif method == "linear":
        student.embedding = ProjectedEmbedding(teacher_table, emb.embedding_dim,
                                               padding_idx=emb.padding_idx or 0)
    return student


def build_student(name: str, vocab_size: int, num_labels: int = 2, *, pad_token_id: int = 0,
                  teacher_table: Optional[torch.Tensor] = None, embedding_init: str = "random",
                  **kwargs: Any) -> nn.Module:
    """Build a student by name: ``"bilstm"``, ``"cnn"`` or ``"tiny"``.

    ``embedding_init`` (``random``/``pca``/``linear``) needs ``teacher_table`` for BiLSTM/CNN;
    extra keyword arguments go to the student's constructor (e.g. ``hidden_size=300``)."""
    if name not in STUDENT_NAMES:
        raise ValueError(f"unknown student {name!r}; choose from {', '.join(STUDENT_NAMES)}")
    if name == "tiny":
        if embedding_init != "random":
            raise ValueError("the tiny Transformer is initialised from teacher *layers* "
                             "(ktlab.transfer.layers), not with embedding_init")
        return tiny_transformer(vocab_size, num_labels, pad_token_id=pad_token_id, **kwargs)
    cls = BiLSTMClassifier if name == "bilstm" else KimCNN
    model = cls(vocab_size, num_labels, pad_token_id=pad_token_id, **kwargs)
    if embedding_init != "random":
        if teacher_table is None:
            raise ValueError(f"embedding_init={embedding_init!r} needs teacher_table "
                             "(ktlab.nn.students.teacher_input_embeddings(teacher))")
        init_embeddings_from_teacher(model, teacher_table, embedding_init)
    elif embedding_init not in EMBEDDING_INITS:
        raise ValueError(f"unknown embedding_init {embedding_init!r}; choose one of "
                         f"{EMBEDDING_INITS}")
    return model


# ----------------------------------------------------------------------------- token-level taggers
#
# NER needs one prediction per *word*. The taggers below return emission scores for every
# sub-token, ``(batch, seq, num_labels)``; :func:`word_view` keeps the first sub-token of each word
# (the positions whose label is not -100), which is where the teacher is trained and evaluated too.

TAGGER_NAMES = ("bilstm", "tiny")
#: Word-shape classes fed to the BiLSTM tagger: the uncased MiniLM vocabulary throws casing away,
#: and "Bank" vs "bank" is much of what makes an entity (Lample et al. 2016 use characters).
CASE_CLASSES = ("pad", "lower", "title", "upper", "digit", "other")


def case_class(word: str) -> int:
    """Index in :data:`CASE_CLASSES` of a word's shape (0 is reserved for padding/specials)."""
    if word.isupper():
        return 3
    if word[:1].isupper():
        return 2
    if word.islower():
        return 1
    if any(ch.isdigit() for ch in word):
        return 4
    return 5


def case_ids_for(words: Sequence[str], word_ids: Sequence[Optional[int]]) -> list[int]:
    """One shape id per sub-token: the shape of the word it belongs to (0 for [CLS]/[SEP])."""
    return [0 if w is None else case_class(words[w]) for w in word_ids]


class BiLSTMTagger(nn.Module):
    """Embeddings (+ a small word-shape embedding) -> BiLSTM -> dropout -> linear emissions.

    The classic neural NER tagger (Huang et al. 2015; Lample et al. 2016 without the character
    LSTM). ``case_dim=0`` switches the shape feature off; ``case_ids`` then are ignored."""

    def __init__(self, vocab_size: int, num_labels: int = 9, embed_dim: int = 300,
                 hidden_size: int = 256, num_layers: int = 1, case_dim: int = 16,
                 dropout: float = 0.3, pad_token_id: int = 0):
        super().__init__()
        self.pad_token_id = pad_token_id
        self.embedding: nn.Module = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        self.case_embedding = (nn.Embedding(len(CASE_CLASSES), case_dim, padding_idx=0)
                               if case_dim else None)
        self.lstm = nn.LSTM(embed_dim + case_dim, hidden_size, num_layers=num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                case_ids: Optional[torch.Tensor] = None, **_: Any) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        x = self.embedding(input_ids)                                     # (B, T, E)
        if self.case_embedding is not None:
            if case_ids is None:
                case_ids = torch.zeros_like(input_ids)
            x = torch.cat([x, self.case_embedding(case_ids)], dim=-1)
        lengths = attention_mask.sum(1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(x), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=input_ids.shape[1])
        return self.classifier(self.dropout(out))                         # (B, T, C)


def tiny_transformer_tagger(vocab_size: int, num_labels: int = 9, hidden_size: int = 256,
                            num_layers: int = 4, num_heads: int = 4,
                            intermediate_size: Optional[int] = None,
                            max_position_embeddings: int = 512, dropout: float = 0.1,
                            pad_token_id: int = 0) -> nn.Module:
    """A small randomly initialised ``BertForTokenClassification`` (same names as the teacher)."""
    from transformers import BertForTokenClassification

    config = tiny_bert_config(vocab_size, num_labels, hidden_size, num_layers, num_heads,
                              intermediate_size, max_position_embeddings, dropout, pad_token_id)
    return BertForTokenClassification(config)


def word_view(logits: torch.Tensor, labels: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep one row per *word*: the first sub-token positions (``labels != -100``), packed left.

    Returns ``(word_logits [B, W, C], word_labels [B, W] (-100 on padding), word_mask [B, W])``
    with ``W`` the most words in the batch. Words stay in sentence order, so row ``b`` position
    ``i`` is word ``i`` of sentence ``b`` (unless truncation cut it)."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must "
                         "agree on (batch, seq)")
    keep = labels != -100
    counts = keep.sum(1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    # stable sort puts kept positions first, in their original order
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
    word_logits = logits.gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    word_mask = torch.arange(width, device=labels.device)[None, :] < counts[:, None]
    word_labels = labels.gather(1, order).masked_fill(~word_mask, -100)
    return word_logits, word_labels, word_mask


class CRFTagger(nn.Module):
    """Any emission model with a :class:`ktlab.nn.crf.CRF` over its *word* positions.

    ``forward`` returns the encoder's emissions unchanged (so distillation losses see ordinary
    logits); given ``labels`` it returns a ``TokenClassifierOutput`` whose ``.loss`` is
    :meth:`nll`, so the Trainer's default loss trains the CRF too. :meth:`nll` is the CRF loss
    and :meth:`decode` Viterbi, both on :func:`word_view`. With ``labels`` (the IOB2 tag names)
    the CRF starts with invalid transitions (``O -> I-PER``) scored ``-1e4``, so Viterbi never
    outputs them."""

    def __init__(self, encoder: nn.Module, num_tags: int,
                 labels: Optional[Sequence[str]] = None):
        super().__init__()
        from ktlab.nn.crf import CRF, transition_constraints
        self.encoder = encoder
        self.crf = CRF(num_tags)
        if labels is not None:
            if len(labels) != num_tags:
                raise ValueError(f"{len(labels)} label names for {num_tags} tags")
            allowed = transition_constraints(labels)
            with torch.no_grad():
                self.crf.transitions.masked_fill_(~allowed, -1e4)
                for j, name in enumerate(labels):
                    if name.startswith("I-"):
                        self.crf.start[j] = -1e4

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                case_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                **_: Any) -> Any:
        from ktlab.train import model_inputs
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids, "case_ids": case_ids}
        inputs = {k: v for k, v in model_inputs(self.encoder, batch).items() if v is not None}
        emissions = logits_of(self.encoder(**inputs))
        if labels is None:
            return emissions
        from transformers.modeling_outputs import TokenClassifierOutput
        return TokenClassifierOutput(loss=self.nll(emissions, labels), logits=emissions)

    def nll(self, emissions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CRF negative log-likelihood per word (summed over sentences / number of words)."""
        word_logits, word_labels, word_mask = word_view(emissions, labels)
        nll = self.crf.neg_log_likelihood(word_logits, word_labels, word_mask, reduction="sum")
        return nll / word_mask.sum().clamp(min=1)

    def decode(self, emissions: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
        word_logits, _, word_mask = word_view(emissions, labels)
        return self.crf.decode(word_logits, word_mask)


def build_tagger(name: str, vocab_size: int, num_labels: int = 9, *, crf: bool = False,
                 labels: Optional[Sequence[str]] = None, pad_token_id: int = 0,
                 **kwargs: Any) -> nn.Module:
    """A token-level student: ``"bilstm"`` (:class:`BiLSTMTagger`) or ``"tiny"``
    (:func:`tiny_transformer_tagger`), optionally wrapped in a :class:`CRFTagger`."""
    if name not in TAGGER_NAMES:
        raise ValueError(f"unknown tagger {name!r}; choose from {', '.join(TAGGER_NAMES)}")
    if name == "bilstm":
        model: nn.Module = BiLSTMTagger(vocab_size, num_labels, pad_token_id=pad_token_id,
                                        **kwargs)
    else:
        model = tiny_transformer_tagger(vocab_size, num_labels, pad_token_id=pad_token_id,
                                        **kwargs)
    return CRFTagger(model, num_labels, labels) if crf else model
