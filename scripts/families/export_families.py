"""Exports tiny random-weight decoders of the families users bring, for test/split/families.test.ts.

Run with Debian's torch (../shared/docs/platform-notes.md section 8):
    /usr/bin/python3 scripts/families/export_families.py [family ...]
Writes test/fixtures/families/<family>/ (model.onnx [+ model.onnx.data], config.json, reference.json). The files
are committed, so tests and CI need no torch. Deterministic: each family has its own seed.

Every export is traced with a NON-EMPTY dummy past (3 cached positions + 2 new ones), and every shape is read at
run time, so multi-token steps on a non-empty cache are exact. IO is Optimum's: input_ids, attention_mask,
[position_ids,] past_key_values.N.key/value [B, kv_heads, past, head_dim] -> logits, present.N.key/value.
reference.json holds torch's logits of one 10-token forward pass without cache, to check the export against.
"""
import json
import math
import os
import sys

import onnx
from onnx import numpy_helper
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'test', 'fixtures', 'families')
PAST, NEW, REFERENCE_TOKENS = 3, 2, 10
MASKED = -1e9


# ---------------------------------------------------------------- shared pieces

def causal_bias(attention_mask, seq, window=None):
    """[B, 1, S, T] additive bias: query i (index past+i) sees key j iff j <= past+i, mask[j] = 1 and, with a
    sliding window, past+i - j < window. Lengths come from the inputs' shapes, so nothing is traced."""
    total = attention_mask.shape[1]
    query = torch.arange(total - seq, total).unsqueeze(1)
    key = torch.arange(total).unsqueeze(0)
    allowed = key <= query
    if window is not None:
        allowed = allowed & (query - key < window)
    allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
    return torch.where(allowed, torch.tensor(0.0), torch.tensor(MASKED))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary(x, position_ids, rotary_dim, theta):
    """Rotate-half RoPE on the first `rotary_dim` channels of [B, H, S, D] (partial rotary when < D)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    angles = position_ids[:, None, :, None].float() * inv_freq
    emb = torch.cat([angles, angles], dim=-1)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot * emb.cos() + rotate_half(rot) * emb.sin()
    return torch.cat([rot, rest], dim=-1) if rotary_dim < x.shape[-1] else rot


def heads(x, n, head_dim):
    return x.reshape(x.shape[0], x.shape[1], n, head_dim).transpose(1, 2)


def attend(q, k, v, bias, n_heads, scale):
    """q [B, H, S, D]; k, v [B, KV, T, D] (the present cache); KV heads widened with expand + reshape."""
    groups = n_heads // k.shape[1]
    if groups > 1:
        k = k[:, :, None].expand(-1, -1, groups, -1, -1).reshape(k.shape[0], n_heads, -1, k.shape[-1])
        v = v[:, :, None].expand(-1, -1, groups, -1, -1).reshape(v.shape[0], n_heads, -1, v.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    context = torch.matmul(torch.softmax(scores, dim=-1), v)
    return context.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


class RMSNorm(nn.Module):
    def __init__(self, d, eps, offset=0.0):
        super().__init__()
        self.weight, self.eps, self.offset = nn.Parameter(torch.ones(d)), eps, offset

    def forward(self, x):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (self.offset + self.weight)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class Decoder(nn.Module):
    """forward(input_ids, attention_mask, [position_ids,] *past) -> logits, *present (flattened k, v per layer)."""
    uses_positions = True

    def forward(self, input_ids, attention_mask, *rest):
        position_ids = rest[0] if self.uses_positions else None
        past = rest[1:] if self.uses_positions else rest
        pairs = [past[i:i + 2] for i in range(0, len(past), 2)]
        x, presents = self.body(input_ids, attention_mask, position_ids, pairs)
        return (x, *presents)


# ---------------------------------------------------------------- families

class Bloom(Decoder):
    """LayerNorm after the embedding, ALiBi from the attention mask (no position_ids), fused qkv interleaved per
    head, biases everywhere, tanh GELU, LM head tied to the embedding."""
    uses_positions = False

    def __init__(self, c):
        super().__init__()
        self.c = c
        d = c['hidden_size']
        self.word_embeddings = nn.Embedding(c['vocab_size'], d)
        self.word_embeddings_layernorm = nn.LayerNorm(d, eps=c['layer_norm_epsilon'])
        self.h = nn.ModuleList(nn.ModuleDict({
            'input_layernorm': nn.LayerNorm(d, eps=c['layer_norm_epsilon']),
            'query_key_value': nn.Linear(d, 3 * d),
            'dense': nn.Linear(d, d),
            'post_attention_layernorm': nn.LayerNorm(d, eps=c['layer_norm_epsilon']),
            'dense_h_to_4h': nn.Linear(d, 4 * d),
            'dense_4h_to_h': nn.Linear(4 * d, d),
        }) for _ in range(c['n_layer']))
        self.ln_f = nn.LayerNorm(d, eps=c['layer_norm_epsilon'])
        n = c['n_head']
        self.register_buffer('slopes', torch.tensor([2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]), persistent=False)

    def body(self, input_ids, attention_mask, _positions, past):
        n, d = self.c['n_head'], self.c['hidden_size']
        hd = d // n
        x = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
        seq = input_ids.shape[1]
        positions = ((attention_mask.cumsum(-1) - 1) * attention_mask).float()  # [B, T]
        alibi = self.slopes[None, :, None, None] * positions[:, None, None, :]  # [B, H, 1, T]
        bias = alibi + causal_bias(attention_mask, seq)
        presents = []
        for layer, (past_k, past_v) in zip(self.h, past):
            h = layer['input_layernorm'](x)
            qkv = layer['query_key_value'](h).reshape(h.shape[0], seq, n, 3, hd)
            q, k, v = (qkv[..., i, :].transpose(1, 2) for i in range(3))
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
            presents += [k, v]
            x = x + layer['dense'](attend(q, k, v, bias, n, 1 / math.sqrt(hd)))
            h = layer['post_attention_layernorm'](x)
            x = x + layer['dense_4h_to_h'](gelu_tanh(layer['dense_h_to_4h'](h)))
        return torch.matmul(self.ln_f(x), self.word_embeddings.weight.t()), presents


class Gemma(Decoder):
    """Embedding scaled by sqrt(d), RMSNorm with (1 + weight), norms before and after each sub-block (Gemma 2
    sandwich), GeGLU MLP, multi-query attention, LM head tied as Gemm(embedding, transB=1), final soft-capping."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        d, eps = c['hidden_size'], c['rms_norm_eps']
        n, kv, hd, ff = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim'], c['intermediate_size']
        self.embed_tokens = nn.Embedding(c['vocab_size'], d)
        norm = lambda: RMSNorm(d, eps, offset=1.0)  # noqa: E731
        self.layers = nn.ModuleList(nn.ModuleDict({
            'input_layernorm': norm(), 'post_attention_layernorm': norm(),
            'pre_feedforward_layernorm': norm(), 'post_feedforward_layernorm': norm(),
            'q_proj': nn.Linear(d, n * hd, bias=False), 'k_proj': nn.Linear(d, kv * hd, bias=False),
            'v_proj': nn.Linear(d, kv * hd, bias=False), 'o_proj': nn.Linear(n * hd, d, bias=False),
            'gate_proj': nn.Linear(d, ff, bias=False), 'up_proj': nn.Linear(d, ff, bias=False),
            'down_proj': nn.Linear(ff, d, bias=False),
        }) for _ in range(c['num_hidden_layers']))
        self.norm = norm()

    def body(self, input_ids, attention_mask, position_ids, past):
        c = self.c
        n, kv, hd = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
        x = self.embed_tokens(input_ids) * torch.tensor(c['hidden_size'] ** 0.5)
        bias = causal_bias(attention_mask, input_ids.shape[1])
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past):
            h = layer['input_layernorm'](x)
            q = rotary(heads(layer['q_proj'](h), n, hd), position_ids, hd, c['rope_theta'])
            k = rotary(heads(layer['k_proj'](h), kv, hd), position_ids, hd, c['rope_theta'])
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, heads(layer['v_proj'](h), kv, hd)], 2)
            presents += [k, v]
            attention = layer['o_proj'](attend(q, k, v, bias, n, c['query_pre_attn_scalar'] ** -0.5))
            x = x + layer['post_attention_layernorm'](attention)
            h = layer['pre_feedforward_layernorm'](x)
            mlp = layer['down_proj'](gelu_tanh(layer['gate_proj'](h)) * layer['up_proj'](h))
            x = x + layer['post_feedforward_layernorm'](mlp)
        h = self.norm(x)
        logits = F.linear(h.reshape(-1, h.shape[-1]), self.embed_tokens.weight)  # retied as Gemm(transB=1)
        logits = logits.reshape(h.shape[0], h.shape[1], -1)
        cap = c['final_logit_softcapping']
        return torch.tanh(logits / cap) * cap, presents


class Phi(Decoder):
    """Phi-2: one LayerNorm per layer feeding attention and MLP in parallel, partial rotary, biases on every
    dense layer (and the LM head), tanh GELU."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        d, n, ff = c['hidden_size'], c['num_attention_heads'], c['intermediate_size']
        self.embed_tokens = nn.Embedding(c['vocab_size'], d)
        self.layers = nn.ModuleList(nn.ModuleDict({
            'input_layernorm': nn.LayerNorm(d, eps=c['layer_norm_eps']),
            'q_proj': nn.Linear(d, d), 'k_proj': nn.Linear(d, d), 'v_proj': nn.Linear(d, d), 'dense': nn.Linear(d, d),
            'fc1': nn.Linear(d, ff), 'fc2': nn.Linear(ff, d),
        }) for _ in range(c['num_hidden_layers']))
        self.final_layernorm = nn.LayerNorm(d, eps=c['layer_norm_eps'])
        self.lm_head = nn.Linear(d, c['vocab_size'])

    def body(self, input_ids, attention_mask, position_ids, past):
        c = self.c
        n = c['num_attention_heads']
        hd = c['hidden_size'] // n
        rot = int(hd * c['partial_rotary_factor'])
        x = self.embed_tokens(input_ids)
        bias = causal_bias(attention_mask, input_ids.shape[1])
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past):
            h = layer['input_layernorm'](x)
            q = rotary(heads(layer['q_proj'](h), n, hd), position_ids, rot, c['rope_theta'])
            k = rotary(heads(layer['k_proj'](h), n, hd), position_ids, rot, c['rope_theta'])
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, heads(layer['v_proj'](h), n, hd)], 2)
            presents += [k, v]
            attention = layer['dense'](attend(q, k, v, bias, n, 1 / math.sqrt(hd)))
            mlp = layer['fc2'](gelu_tanh(layer['fc1'](h)))
            x = attention + mlp + x
        return self.lm_head(self.final_layernorm(x)), presents


class Llama(Decoder):
    """Llama / Mistral / Qwen2: RMSNorm, rotary, GQA, SwiGLU; options: sliding window, qkv bias, tied head."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        d, n, kv, ff = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads'], c['intermediate_size']
        hd, qkv_bias = d // n, c.get('attention_bias', False)
        self.embed_tokens = nn.Embedding(c['vocab_size'], d)
        self.layers = nn.ModuleList(nn.ModuleDict({
            'input_layernorm': RMSNorm(d, c['rms_norm_eps']), 'post_attention_layernorm': RMSNorm(d, c['rms_norm_eps']),
            'q_proj': nn.Linear(d, n * hd, bias=qkv_bias), 'k_proj': nn.Linear(d, kv * hd, bias=qkv_bias),
            'v_proj': nn.Linear(d, kv * hd, bias=qkv_bias), 'o_proj': nn.Linear(n * hd, d, bias=False),
            'gate_proj': nn.Linear(d, ff, bias=False), 'up_proj': nn.Linear(d, ff, bias=False),
            'down_proj': nn.Linear(ff, d, bias=False),
        }) for _ in range(c['num_hidden_layers']))
        self.norm = RMSNorm(d, c['rms_norm_eps'])
        if not c['tie_word_embeddings']:
            self.lm_head = nn.Linear(d, c['vocab_size'], bias=False)

    def body(self, input_ids, attention_mask, position_ids, past):
        c = self.c
        n, kv = c['num_attention_heads'], c['num_key_value_heads']
        hd = c['hidden_size'] // n
        x = self.embed_tokens(input_ids)
        bias = causal_bias(attention_mask, input_ids.shape[1], c.get('sliding_window'))
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past):
            h = layer['input_layernorm'](x)
            q = rotary(heads(layer['q_proj'](h), n, hd), position_ids, hd, c['rope_theta'])
            k = rotary(heads(layer['k_proj'](h), kv, hd), position_ids, hd, c['rope_theta'])
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, heads(layer['v_proj'](h), kv, hd)], 2)
            presents += [k, v]
            x = x + layer['o_proj'](attend(q, k, v, bias, n, 1 / math.sqrt(hd)))
            h = layer['post_attention_layernorm'](x)
            x = x + layer['down_proj'](F.silu(layer['gate_proj'](h)) * layer['up_proj'](h))
        h = self.norm(x)
        if c['tie_word_embeddings']:
            return torch.matmul(h, self.embed_tokens.weight.t()), presents
        return self.lm_head(h), presents


class NeoX(Decoder):
    """GPT-NeoX: parallel residual (x + attn(ln1 x) + mlp(ln2 x)), LayerNorms with bias, fused qkv with bias,
    partial rotary, exact GELU, untied head; modules named so that no node name contains "layers"."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        d, eps = c['hidden_size'], c['layer_norm_eps']
        self.embed_in = nn.Embedding(c['vocab_size'], d)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            'ln1': nn.LayerNorm(d, eps=eps), 'ln2': nn.LayerNorm(d, eps=eps),
            'query_key_value': nn.Linear(d, 3 * d), 'dense': nn.Linear(d, d),
            'dense_h_to_4h': nn.Linear(d, c['intermediate_size']),
            'dense_4h_to_h': nn.Linear(c['intermediate_size'], d),
        }) for _ in range(c['num_hidden_layers']))
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.embed_out = nn.Linear(d, c['vocab_size'], bias=False)

    def body(self, input_ids, attention_mask, position_ids, past):
        c = self.c
        n = c['num_attention_heads']
        hd = c['hidden_size'] // n
        rot = int(hd * c['rotary_pct'])
        x = self.embed_in(input_ids)
        seq = input_ids.shape[1]
        bias = causal_bias(attention_mask, seq)
        presents = []
        for block, (past_k, past_v) in zip(self.blocks, past):
            qkv = block['query_key_value'](block['ln1'](x)).reshape(x.shape[0], seq, n, 3 * hd).transpose(1, 2)
            q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
            q = rotary(q, position_ids, rot, c['rotary_emb_base'])
            k = rotary(k, position_ids, rot, c['rotary_emb_base'])
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
            presents += [k, v]
            attention = block['dense'](attend(q, k, v, bias, n, 1 / math.sqrt(hd)))
            mlp = block['dense_4h_to_h'](F.gelu(block['dense_h_to_4h'](block['ln2'](x))))
            x = mlp + attention + x
        return self.embed_out(self.final_layer_norm(x)), presents


# ---------------------------------------------------------------- configs

FAMILIES = {
    'bloom': (Bloom, 11, {
        'model_type': 'bloom', 'architectures': ['BloomForCausalLM'], 'vocab_size': 96, 'hidden_size': 32,
        'n_layer': 4, 'n_head': 4, 'layer_norm_epsilon': 1e-5, 'tie_word_embeddings': True,
        'bos_token_id': 1, 'eos_token_id': 2,
    }),
    'gemma': (Gemma, 12, {
        'model_type': 'gemma2', 'architectures': ['Gemma2ForCausalLM'], 'vocab_size': 128, 'hidden_size': 32,
        'intermediate_size': 64, 'num_hidden_layers': 4, 'num_attention_heads': 4, 'num_key_value_heads': 1,
        'head_dim': 8, 'rms_norm_eps': 1e-6, 'rope_theta': 10000.0, 'query_pre_attn_scalar': 8,
        'final_logit_softcapping': 30.0, 'hidden_activation': 'gelu_pytorch_tanh', 'tie_word_embeddings': True,
        'bos_token_id': 2, 'eos_token_id': 1,
    }),
    'phi': (Phi, 13, {
        'model_type': 'phi', 'architectures': ['PhiForCausalLM'], 'vocab_size': 112, 'hidden_size': 32,
        'intermediate_size': 64, 'num_hidden_layers': 4, 'num_attention_heads': 4, 'num_key_value_heads': 4,
        'partial_rotary_factor': 0.5, 'layer_norm_eps': 1e-5, 'rope_theta': 10000.0, 'hidden_act': 'gelu_new',
        'tie_word_embeddings': False, 'bos_token_id': 1, 'eos_token_id': 2,
    }),
    'mistral': (Llama, 14, {
        'model_type': 'mistral', 'architectures': ['MistralForCausalLM'], 'vocab_size': 100, 'hidden_size': 32,
        'intermediate_size': 64, 'num_hidden_layers': 4, 'num_attention_heads': 4, 'num_key_value_heads': 2,
        'sliding_window': 4, 'rms_norm_eps': 1e-5, 'rope_theta': 10000.0, 'hidden_act': 'silu',
        'tie_word_embeddings': False, 'bos_token_id': 1, 'eos_token_id': 2,
    }),
    'gpt-neox': (NeoX, 15, {
        'model_type': 'gpt_neox', 'architectures': ['GPTNeoXForCausalLM'], 'vocab_size': 120, 'hidden_size': 32,
        'intermediate_size': 128, 'num_hidden_layers': 4, 'num_attention_heads': 4, 'rotary_pct': 0.5,
        'rotary_emb_base': 10000, 'layer_norm_eps': 1e-5, 'use_parallel_residual': True, 'hidden_act': 'gelu',
        'tie_word_embeddings': False, 'bos_token_id': 0, 'eos_token_id': 0,
    }),
    'qwen2': (Llama, 16, {
        'model_type': 'qwen2', 'architectures': ['Qwen2ForCausalLM'], 'vocab_size': 128, 'hidden_size': 24,
        'intermediate_size': 64, 'num_hidden_layers': 4, 'num_attention_heads': 6, 'num_key_value_heads': 2,
        'attention_bias': True, 'rms_norm_eps': 1e-6, 'rope_theta': 1000000.0, 'hidden_act': 'silu',
        'tie_word_embeddings': True, 'torch_dtype': 'float32', 'bos_token_id': 1, 'eos_token_id': 2,
    }),
}
EXTERNAL_DATA = {'qwen2'}


def randomize(model, seed):
    """Weights large enough that logits reach a few units (so splitting errors would show)."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda p, scale: torch.randn(p.shape, generator=g) * scale  # noqa: E731
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.weight.copy_(noise(module.weight, 1.0))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(noise(module.weight, 1.0 / math.sqrt(module.in_features)))
                if module.bias is not None:
                    module.bias.copy_(noise(module.bias, 0.1))
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(1.0 + noise(module.weight, 0.1))
                module.bias.copy_(noise(module.bias, 0.1))
            elif isinstance(module, RMSNorm):
                module.weight.copy_(1.0 - module.offset + noise(module.weight, 0.1))


def kv_geometry(c):
    n = c.get('num_attention_heads', c.get('n_head'))
    kv = c.get('num_key_value_heads', n)
    hd = c.get('head_dim', c['hidden_size'] // n)
    layers = c.get('num_hidden_layers', c.get('n_layer'))
    return layers, kv, hd


def retie_head(model, embedding_name, as_gemm):
    """Constant folding turns the LM head's Transpose(embedding) into a second initializer. Tie it back, as the
    torch module is: a Transpose node over the embedding, or (as_gemm) Gemm(x, embedding, transB=1)."""
    graph = model.graph
    embedding = numpy_helper.to_array(next(t for t in graph.initializer if t.name == embedding_name))
    copy = next(t for t in graph.initializer if t.name != embedding_name and list(t.dims) == list(embedding.shape[::-1])
                and (numpy_helper.to_array(t) == embedding.T).all())
    graph.initializer.remove(copy)
    if not as_gemm:
        transpose = onnx.helper.make_node('Transpose', [embedding_name], [copy.name], name='/lm_head/Transpose',
                                          perm=[1, 0])
        graph.node.insert(0, transpose)
        return
    index, matmul = next((i, n) for i, n in enumerate(graph.node) if n.op_type == 'MatMul' and n.input[1] == copy.name)
    graph.node.remove(matmul)
    graph.node.insert(index, onnx.helper.make_node('Gemm', [matmul.input[0], embedding_name], list(matmul.output),
                                                   name='/lm_head/Gemm', transB=1))


def export(family):
    cls, seed, config = FAMILIES[family]
    torch.manual_seed(seed)
    model = cls(config).eval()
    randomize(model, seed)
    layers, kv, hd = kv_geometry(config)
    out = os.path.join(ROOT, family)
    os.makedirs(out, exist_ok=True)
    for stale in ('model.onnx', 'model.onnx.data'):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))

    g = torch.Generator().manual_seed(seed + 100)
    ids = torch.randint(0, config['vocab_size'], (1, NEW), generator=g)
    mask = torch.ones(1, PAST + NEW, dtype=torch.int64)
    positions = torch.arange(PAST, PAST + NEW).unsqueeze(0)
    past = [torch.randn(1, kv, PAST, hd, generator=g) for _ in range(2 * layers)]
    names = ['input_ids', 'attention_mask'] + (['position_ids'] if cls.uses_positions else [])
    args = (ids, mask) + ((positions,) if cls.uses_positions else ()) + tuple(past)
    kv_names = [f'past_key_values.{i}.{kind}' for i in range(layers) for kind in ('key', 'value')]
    present_names = [name.replace('past_key_values', 'present') for name in kv_names]
    axes = {'input_ids': {0: 'batch_size', 1: 'sequence_length'},
            'attention_mask': {0: 'batch_size', 1: 'total_sequence_length'},
            'position_ids': {0: 'batch_size', 1: 'sequence_length'},
            'logits': {0: 'batch_size', 1: 'sequence_length'}}
    axes.update({n: {0: 'batch_size', 2: 'past_sequence_length'} for n in kv_names})
    axes.update({n: {0: 'batch_size', 2: 'total_sequence_length'} for n in present_names})
    path = os.path.join(out, 'model.onnx')
    with torch.no_grad():
        torch.onnx.export(model, args, path, input_names=names + kv_names, output_names=['logits'] + present_names,
                          dynamic_axes={k: v for k, v in axes.items() if k in names + kv_names + present_names
                                        or k == 'logits'},
                          opset_version=17, do_constant_folding=True)

    onnx_model = onnx.load(path)
    if config['tie_word_embeddings']:
        embedding = next(n for n, _ in model.named_parameters() if 'embed' in n)
        retie_head(onnx_model, embedding, as_gemm=family == 'gemma')
    onnx_model.producer_name = 'hat scripts/families/export_families.py'
    onnx.checker.check_model(onnx_model)
    if family in EXTERNAL_DATA:
        onnx.save_model(onnx_model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location='model.onnx.data', size_threshold=1024)
    else:
        onnx.save_model(onnx_model, path)

    # Reference: one forward pass of REFERENCE_TOKENS tokens on an empty cache.
    tokens = torch.randint(0, config['vocab_size'], (1, REFERENCE_TOKENS), generator=g)
    empty = [torch.zeros(1, kv, 0, hd) for _ in range(2 * layers)]
    ref_args = (tokens, torch.ones(1, REFERENCE_TOKENS, dtype=torch.int64))
    if cls.uses_positions:
        ref_args += (torch.arange(REFERENCE_TOKENS).unsqueeze(0),)
    with torch.no_grad():
        logits = model(*ref_args, *empty)[0][0]
    reference = {'ids': tokens[0].tolist(), 'logits': [[round(v, 6) for v in row] for row in logits.tolist()]}
    with open(os.path.join(out, 'reference.json'), 'w') as f:
        json.dump(reference, f, separators=(',', ':'))
    with open(os.path.join(out, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
        f.write('\n')
    sizes = {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}
    print(family, sizes)


if __name__ == '__main__':
    torch.set_num_threads(1)
    for family in sys.argv[1:] or FAMILIES:
        export(family)
