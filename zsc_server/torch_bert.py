"""A plain-torch BERT encoder for the `python-torch` runtime: no transformers on the server.

Same parameter names as Hugging Face's BertModel (minus the `bert.` prefix), so an exported state dict
loads as is; attention through `scaled_dot_product_attention` (fused kernels on the GPU). Static shapes
and no Python branching on data, so a forward pass can be captured in a CUDA graph.

Two heads, as the ONNX export has: `classifier` (pooler + linear: NLI logits) and `mean_pool`
(sentence-transformers mean pooling: embeddings).

`forward_packed` runs the same weights on packed tokens: a batch's sequences concatenated into one
[tokens, hidden] stream with no padding rows or columns (zsc_server.packing builds one), attention per
sequence through `cu_seqlens` (FlashAttention's variable-length kernel on a GPU, a loop over the sequences
elsewhere), so a batch costs its real tokens, not rows x the longest.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclasses.dataclass(frozen=True)
class BertShape:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 0  # 0: no classifier (mean_pool head)
    head: str = "classifier"  # or "mean_pool"

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported ({', '.join(ACTIVATIONS)})")
        if self.head not in ("classifier", "mean_pool"):
            raise ValueError(f"head must be classifier or mean_pool, got {self.head!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, seq] padded (positions 0..seq-1), or [tokens] packed with each token's `position_ids`."""
        positions = (self.position_embeddings.weight[: input_ids.shape[1]].unsqueeze(0) if position_ids is None
                     else self.position_embeddings(position_ids))
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class _Linear(nn.Module):
    """`dense` + residual LayerNorm, as BertSelfOutput / BertOutput are laid out."""

    def __init__(self, inputs: int, outputs: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, outputs)
        self.LayerNorm = nn.LayerNorm(outputs, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.heads = shape.num_attention_heads
        self.query = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.key = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.value = nn.Linear(shape.hidden_size, shape.hidden_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                                 attn_mask=additive_mask)
        return context.transpose(1, 2).reshape(batch, seq, hidden)

    def packed(self, x: torch.Tensor, cu_seqlens: torch.Tensor, slot_of_token: torch.Tensor,
               max_seqlen: int) -> torch.Tensor:
        """Attention within each sequence of a packed [tokens, hidden] stream."""
        tokens, hidden = x.shape
        q, k, v = (t.view(tokens, self.heads, hidden // self.heads) for t in (self.query(x), self.key(x),
                                                                                self.value(x)))
        return packed_attention(q, k, v, cu_seqlens, slot_of_token, max_seqlen).reshape(tokens, hidden)


class _Attention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.self = _SelfAttention(shape)
        self.output = _Linear(shape.hidden_size, shape.hidden_size, shape.layer_norm_eps)


class _Intermediate(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(shape.hidden_size, shape.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.attention = _Attention(shape)
        self.intermediate = _Intermediate(shape)
        self.output = _Linear(shape.intermediate_size, shape.hidden_size, shape.layer_norm_eps)
        self.activation = ACTIVATIONS[shape.hidden_act]

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention.output(self.attention.self(x, additive_mask), x))

    def packed(self, x: torch.Tensor, cu_seqlens: torch.Tensor, slot_of_token: torch.Tensor,
               max_seqlen: int) -> torch.Tensor:
        attended = self.attention.self.packed(x, cu_seqlens, slot_of_token, max_seqlen)
        return self.feed_forward(self.attention.output(attended, x))

    def feed_forward(self, attended: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.intermediate.dense(attended)), attended)


class _Encoder(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(shape) for _ in range(shape.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(shape.hidden_size, shape.hidden_size)


class PlainBert(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.embeddings = _Embeddings(shape)
        self.encoder = _Encoder(shape)
        if shape.head == "classifier":
            self.pooler = _Pooler(shape)
            self.classifier = nn.Linear(shape.hidden_size, shape.num_labels)

    @property
    def output_width(self) -> int:
        """Columns of an output row: NLI logits, or the embedding."""
        return self.shape.num_labels if self.shape.head == "classifier" else self.shape.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        # finite "minus infinity": a row that is all padding (batch padding for a CUDA graph) stays
        # finite instead of turning into NaN; its result is discarded anyway
        keep = attention_mask[:, None, None, :].to(x.dtype)
        additive_mask = (1.0 - keep) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, additive_mask)
        if self.shape.head == "classifier":
            pooled = torch.tanh(self.pooler.dense(x[:, 0]))
            return self.classifier(pooled).float()
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        summed = (x * mask).sum(dim=1, dtype=torch.float32)
        return summed / mask.sum(dim=1, dtype=torch.float32).clamp(min=1e-9)

    def forward_packed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor,
                       slot_of_token: torch.Tensor, cu_seqlens: torch.Tensor, first_token: torch.Tensor,
                       max_seqlen: int) -> torch.Tensor:
        """The same outputs as `forward`, one row per sequence slot, from packed tokens (zsc_server.packing:
        `PackedBatch.arrays()` in this order; padding tokens and empty slots allowed, at fixed shapes)."""
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        for layer in self.encoder.layer:
            x = layer.packed(x, cu_seqlens, slot_of_token, max_seqlen)
        if self.shape.head == "classifier":
            pooled = torch.tanh(self.pooler.dense(x[first_token]))
            return self.classifier(pooled).float()
        slots = first_token.shape[0]
        summed = torch.zeros(slots + 1, x.shape[1], dtype=torch.float32, device=x.device)
        summed.index_add_(0, slot_of_token, x.float())  # padding tokens land in the extra row
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).clamp(min=1).unsqueeze(1).float()
        return summed[:slots] / lengths


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     slot_of_token: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    """[tokens, heads, head_dim] attention within each sequence; padding tokens get zeros. On a CUDA GPU
    FlashAttention's variable-length kernel (no host synchronisation: a CUDA graph can capture it, and
    `max_seqlen` may be any bound on the longest sequence); elsewhere one attention per sequence."""
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        context = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)
        # the kernel leaves the tokens past cu_seqlens[-1] unwritten: whatever memory held, NaN included
        return torch.where((slot_of_token < cu_seqlens.shape[0] - 1).view(-1, 1, 1), context, 0)
    context = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds, bounds[1:]):
        if end > start:
            context[start:end] = F.scaled_dot_product_attention(
                q[start:end].transpose(0, 1), k[start:end].transpose(0, 1), v[start:end].transpose(0, 1)
            ).transpose(0, 1)
    return context


def save_plain_bert(path, shape: BertShape, state_dict: dict[str, torch.Tensor]) -> None:
    """One file the server loads with `torch.load(weights_only=True)`: shape + weights, FP32 on CPU."""
    model = PlainBert(shape)
    wanted = model.state_dict().keys()
    weights = {key: state_dict[key].detach().to("cpu", torch.float32).contiguous() for key in wanted
               if key in state_dict}
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise KeyError(f"{len(missing)} weights missing for the plain-torch BERT, e.g. {missing[:3]}")
    torch.save({"shape": dataclasses.asdict(shape), "state_dict": weights}, path)


def load_plain_bert(path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> PlainBert:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = PlainBert(BertShape(**saved["shape"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device=device, dtype=dtype).eval()
