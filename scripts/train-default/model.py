"""Minimal Llama-architecture decoder (HF LlamaForCausalLM semantics) with an Optimum-style KV cache.

RMSNorm, rotary embeddings (rotate-half, like HF Llama), grouped-query attention whose KV cache keeps
the KV heads (widened to the query heads with expand + reshape, never repeat_interleave), SwiGLU MLP,
tied input/output embeddings.

`forward(input_ids, attention_mask, position_ids, past)`:
  input_ids      [B, S]      int64
  attention_mask [B, P + S]  int64 (1 = attend)
  position_ids   [B, S]      int64
  past           list of (key, value) per layer, each [B, KV, P, D]
returns logits [B, S, V] and the list of presents [B, KV, P + S, D].
The causal mask is built from attention_mask only with shape-agnostic ops (cumsum of ones, gather
of the last element), so nothing about traced shapes gets baked into an ONNX export.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 3072
    hidden_size: int = 256
    num_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 688
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True
    bos_token_id: int = 0
    eos_token_id: int = 1

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.h = cfg.num_attention_heads
        self.kv = cfg.num_key_value_heads
        self.d = cfg.head_dim
        self.rep = self.h // self.kv
        self.q_proj = nn.Linear(cfg.hidden_size, self.h * self.d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv * self.d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, cfg.hidden_size, bias=False)

    def _widen(self, x):
        # [B, KV, T, D] -> [B, H, T, D]; query head h reads KV head h // rep (HF repeat_kv).
        b, kv, t, d = x.shape
        return x[:, :, None, :, :].expand(b, kv, self.rep, t, d).reshape(b, kv * self.rep, t, d)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        present = (k, v)
        kf = self._widen(k)
        vf = self._widen(v)
        att = torch.matmul(q, kf.transpose(2, 3)) * (1.0 / math.sqrt(self.d))
        att = att + bias
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, vf)  # [B, H, S, D]
        y = y.transpose(1, 2).reshape(b, s, self.h * self.d)
        return self.o_proj(y), present


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, present


class Llama(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)
        # GPT-2 style scaled init of residual output projections
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, std=0.02 / math.sqrt(2 * cfg.num_layers))
            nn.init.normal_(layer.mlp.down_proj.weight, std=0.02 / math.sqrt(2 * cfg.num_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def lm_head(self, h):
        return F.linear(h, self.embed_tokens.weight)  # tied

    @staticmethod
    def build_bias(attention_mask, seq_ids):
        """Additive mask [B, 1, S, P+S]: query P+i sees key j iff j <= P+i and attention_mask[:, j] == 1."""
        ones_k = torch.ones_like(attention_mask[0])  # [T]
        kk = torch.cumsum(ones_k, 0)
        k_off = kk - kk[-1]  # j - (T-1)
        ones_q = torch.ones_like(seq_ids[0])  # [S]
        qq = torch.cumsum(ones_q, 0)
        q_off = qq - qq[-1]  # i - (S-1)
        causal = k_off[None, :] <= q_off[:, None]  # [S, T]  <=>  j <= P + i
        keep = causal[None, None, :, :] & (attention_mask[:, None, None, :] > 0)  # [B,1,S,T]
        zero = torch.zeros((), dtype=torch.float32)
        neg = torch.full((), -1e9, dtype=torch.float32)
        return torch.where(keep, zero, neg)

    def rope(self, position_ids):
        freqs = position_ids[:, :, None].to(torch.float32) * self.inv_freq[None, None, :]  # [B,S,D/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :, :]  # [B,1,S,D]
        return emb.cos(), emb.sin()

    def forward(self, input_ids, attention_mask, position_ids, past=None):
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope(position_ids)
        bias = self.build_bias(attention_mask, input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = (past[i] if past is not None else (None, None))
            x, pr = layer(x, cos, sin, bias, pk, pv)
            presents.append(pr)
        logits = self.lm_head(self.norm(x))
        return logits, presents

    def forward_train(self, idx):
        """Plain causal LM forward for training (no cache): idx [B, T] -> logits [B, T, V]."""
        b, t = idx.shape
        x = self.embed_tokens(idx)
        pos = torch.arange(t, device=idx.device)[None, :].expand(b, t)
        cos, sin = self.rope(pos)
        bias = torch.full((t, t), -1e9).triu(1)[None, None]
        for layer in self.layers:
            x, _ = layer(x, cos, sin, bias)
        return self.lm_head(self.norm(x))


class OnnxWrapper(nn.Module):
    """Flat-signature wrapper for torch.onnx.export (Optimum names)."""

    def __init__(self, model: Llama):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        n = self.model.cfg.num_layers
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(n)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)
