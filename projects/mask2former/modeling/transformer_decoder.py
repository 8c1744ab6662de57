"""Mask2Former transformer decoder with masked cross-attention over three feature scales."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import PositionEmbeddingSine


def _xavier_init_matrices(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


class SelfAttentionLayer(nn.Module):
    """Query self-attention with residual + LayerNorm (post-norm, or pre-norm if ``pre_norm``)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        _xavier_init_matrices(self)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor,
                blocked: Optional[torch.Tensor] = None) -> torch.Tensor:
        """queries, query_pos: (B, Q, C); blocked: (Q, Q) bool, True where a query may NOT attend.
        Returns (B, Q, C)."""
        normed = self.norm(queries) if self.pre_norm else queries
        q = k = normed + query_pos
        attended = self.attn(q, k, value=normed, attn_mask=blocked, need_weights=False)[0]
        queries = queries + self.dropout(attended)
        return queries if self.pre_norm else self.norm(queries)


class MaskedCrossAttentionLayer(nn.Module):
    """Cross-attention from queries to one feature level, restricted by a boolean mask."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        _xavier_init_matrices(self)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        blocked: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """queries, query_pos: (B, Q, C); memory, memory_pos: (B, HW, C);
        blocked: (B * num_heads, Q, HW) bool, True where a query may NOT attend. Returns (B, Q, C)."""
        normed = self.norm(queries) if self.pre_norm else queries
        attended = self.attn(
            normed + query_pos, memory + memory_pos, value=memory, attn_mask=blocked, need_weights=False
        )[0]
        queries = queries + self.dropout(attended)
        return queries if self.pre_norm else self.norm(queries)


class FeedForwardLayer(nn.Module):
    """Two-layer ReLU MLP with residual + LayerNorm."""

    def __init__(self, embed_dim: int, dim_feedforward: int = 2048, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.linear_in = nn.Linear(embed_dim, dim_feedforward)
        self.linear_out = nn.Linear(dim_feedforward, embed_dim)
        self.hidden_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)
        self.pre_norm = pre_norm
        _xavier_init_matrices(self)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """queries: (B, Q, C). Returns (B, Q, C)."""
        normed = self.norm(queries) if self.pre_norm else queries
        hidden = self.linear_out(self.hidden_dropout(F.relu(self.linear_in(normed))))
        queries = queries + self.dropout(hidden)
        return queries if self.pre_norm else self.norm(queries)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learned queries refined by ``dec_layers`` layers (masked cross-attn -> self-attn -> FFN),
    cycling over the feature levels coarsest first. Predictions are made before the first layer
    and after every layer, giving ``dec_layers + 1`` supervised outputs.

    ``num_queries_one_to_many > 0`` adds a second group of learned queries for training only
    (H-DETR's hybrid scheme): they run through the same layers and heads, the two groups cannot
    attend to each other in self-attention, and their predictions come back under
    ``outputs["one_to_many"]`` for a criterion that gives each instance several queries. In
    evaluation mode only the ``num_queries`` one-to-one queries exist.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        pre_norm: bool = False,
        mask_dim: int = 256,
        enforce_input_projection: bool = False,
        num_feature_levels: int = 3,
        dropout: float = 0.0,
        num_queries_one_to_many: int = 0,
    ):
        super().__init__()
        if num_queries_one_to_many < 0:
            raise ValueError(f"num_queries_one_to_many must be >= 0; got {num_queries_one_to_many}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.num_queries_one_to_many = num_queries_one_to_many
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels

        self.position_encoding = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.cross_attention_layers = nn.ModuleList(
            MaskedCrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.ffn_layers = nn.ModuleList(
            FeedForwardLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # initial query content
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # query positional embedding
        if num_queries_one_to_many:  # separate tables: a hybrid-trained checkpoint serves a plain model
            self.query_feat_one_to_many = nn.Embedding(num_queries_one_to_many, hidden_dim)
            self.query_embed_one_to_many = nn.Embedding(num_queries_one_to_many, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)

        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_projection:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def prediction_heads(
        self, queries: torch.Tensor, mask_features: torch.Tensor, attn_mask_size: Optional[Tuple[int, int]]
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """queries: (B, Q, C); mask_features: (B, mask_dim, H, W).

        Returns class logits (B, Q, num_classes + 1), mask logits (B, Q, H, W) and, if
        ``attn_mask_size=(h, w)`` is given, the detached attention mask for the next
        cross-attention: (B * num_heads, Q, h * w) bool, True where attention is blocked
        (predicted mask probability < 0.5 at that level's resolution); rows that would be
        fully blocked are left fully open."""
        normed = self.decoder_norm(queries)
        class_logits = self.class_embed(normed)
        mask_embed = self.mask_embed(normed)
        mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        if attn_mask_size is None:
            return class_logits, mask_logits, None

        with torch.no_grad():
            resized = F.interpolate(mask_logits.detach(), size=attn_mask_size, mode="bilinear", align_corners=False)
            blocked = resized.sigmoid().flatten(2) < 0.5  # (B, Q, h*w)
            blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
            batch, num_queries, num_keys = blocked.shape
            blocked = blocked.unsqueeze(1).expand(batch, self.num_heads, num_queries, num_keys)
            blocked = blocked.reshape(batch * self.num_heads, num_queries, num_keys)
        return class_logits, mask_logits, blocked

    def forward(self, multi_scale_features: List[torch.Tensor], mask_features: torch.Tensor) -> Dict[str, object]:
        """multi_scale_features: list of num_feature_levels (B, in_channels, h_l, w_l), lowest
        resolution first; mask_features: (B, mask_dim, H/4, W/4).

        Returns {"pred_logits": (B, Q, C+1), "pred_masks": (B, Q, H/4, W/4),
        "aux_outputs": dec_layers dicts with the same two keys, earliest first}, and in training
        with a one-to-many group ``"one_to_many"``: the same structure for its queries."""
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels, got {len(multi_scale_features)}"
            )
        batch = mask_features.shape[0]
        memories, memory_pos, level_sizes = [], [], []
        for level, features in enumerate(multi_scale_features):
            level_sizes.append(tuple(features.shape[-2:]))
            pos = self.position_encoding(features)
            memory_pos.append(pos.flatten(2).transpose(1, 2))  # (B, h*w, C)
            projected = self.input_proj[level](features).flatten(2).transpose(1, 2)
            memories.append(projected + self.level_embed.weight[level][None, None, :])

        query_feat, query_embed, groups_blocked = self.query_feat.weight, self.query_embed.weight, None
        hybrid = self.training and self.num_queries_one_to_many > 0
        if hybrid:
            query_feat = torch.cat([query_feat, self.query_feat_one_to_many.weight])
            query_embed = torch.cat([query_embed, self.query_embed_one_to_many.weight])
            in_group = torch.arange(query_feat.shape[0], device=query_feat.device) >= self.num_queries
            groups_blocked = in_group[:, None] != in_group[None, :]  # (Q_all, Q_all): no attention across groups
        query_pos = query_embed.unsqueeze(0).expand(batch, -1, -1)  # (B, Q, C)
        queries = query_feat.unsqueeze(0).expand(batch, -1, -1)

        class_logits, mask_logits, blocked = self.prediction_heads(queries, mask_features, level_sizes[0])
        predictions = [(class_logits, mask_logits)]
        for layer_index in range(self.num_layers):
            level = layer_index % self.num_feature_levels
            queries = self.cross_attention_layers[layer_index](
                queries, memories[level], query_pos, memory_pos[level], blocked
            )
            queries = self.self_attention_layers[layer_index](queries, query_pos, groups_blocked)
            queries = self.ffn_layers[layer_index](queries)
            is_last = layer_index == self.num_layers - 1
            next_size = None if is_last else level_sizes[(layer_index + 1) % self.num_feature_levels]
            class_logits, mask_logits, blocked = self.prediction_heads(queries, mask_features, next_size)
            predictions.append((class_logits, mask_logits))

        outputs = self._outputs([(logits[:, : self.num_queries], masks[:, : self.num_queries])
                                 for logits, masks in predictions])
        if hybrid:
            outputs["one_to_many"] = self._outputs([(logits[:, self.num_queries:], masks[:, self.num_queries:])
                                                    for logits, masks in predictions])
        return outputs

    @staticmethod
    def _outputs(predictions: List[Tuple[torch.Tensor, torch.Tensor]]) -> Dict[str, object]:
        final_logits, final_masks = predictions[-1]
        return {
            "pred_logits": final_logits,
            "pred_masks": final_masks,
            "aux_outputs": [{"pred_logits": logits, "pred_masks": masks} for logits, masks in predictions[:-1]],
        }
