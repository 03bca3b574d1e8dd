"""ktlab.nn: the networks of the course, written to be read.

``attention`` (scaled dot-product attention, heads, masks, positions) and ``bert`` (a BERT whose
parameter names match ``transformers`` so Hugging Face checkpoints load one to one).
"""
from ktlab.nn.attention import (LearnedPositionEmbedding, MultiHeadSelfAttention,
                                SinusoidalPositionEmbedding, merge_heads, padding_mask,
                                scaled_dot_product_attention, sinusoidal_positions, split_heads)
from ktlab.nn.bert import (BertConfig, BertForPreTraining, BertModel, EncoderOutput,
                           PreTrainingOutput, from_hf)

__all__ = [
    "LearnedPositionEmbedding", "MultiHeadSelfAttention", "SinusoidalPositionEmbedding",
    "merge_heads", "padding_mask", "scaled_dot_product_attention", "sinusoidal_positions",
    "split_heads", "BertConfig", "BertForPreTraining", "BertModel", "EncoderOutput",
    "PreTrainingOutput", "from_hf",
]
