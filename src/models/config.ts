/**
 * Llama-family decoder dimensions, the presets `hat synth` knows, and the weight inventory every builder,
 * importer and the reference forward agree on (names, shapes, which are norms).
 */
import { HatError } from '../errors.ts';

export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Per-head size; hiddenSize / heads unless a model says otherwise. */
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** The LM head reuses the token embedding (llama2.c "shared classifier", Qwen2.5-0.5B). */
  tiedEmbeddings: boolean;
  /** Biases on the q/k/v projections (Qwen2). */
  attentionBias: boolean;
  maxPositions: number;
  bosTokenId?: number;
  eosTokenId?: number;
}

export type ConfigInput = Omit<
  LlamaConfig,
  'headDim' | 'ropeTheta' | 'rmsNormEps' | 'tiedEmbeddings' | 'attentionBias' | 'maxPositions'
> &
  Partial<LlamaConfig>;

export function llamaConfig(input: ConfigInput): LlamaConfig {
  const config: LlamaConfig = {
    headDim: input.hiddenSize / input.heads,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: false,
    attentionBias: false,
    maxPositions: 2048,
    // Keys given as undefined keep their defaults.
    ...Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined)),
  } as LlamaConfig;
  validateConfig(config);
  return config;
}

function validateConfig(c: LlamaConfig): void {
  const positive = ['vocabSize', 'hiddenSize', 'intermediateSize', 'layers', 'heads', 'kvHeads', 'headDim'] as const;
  for (const key of positive) {
    if (!Number.isInteger(c[key]) || c[key] <= 0)
      throw new HatError(
        'BAD_OPTION',
        `model config: ${key} must be a positive integer, got ${c[key]}`,
        'fix the option (--head-dim defaults to hidden size / heads, which must divide evenly)',
      );
  }
  for (const key of ['bosTokenId', 'eosTokenId'] as const) {
    const id = c[key];
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < c.vocabSize))
      throw new HatError(
        'BAD_OPTION',
        `model config: ${key} ${id} is outside the vocabulary of ${c.vocabSize}`,
        'give an id below the vocabulary size',
      );
  }
  if (c.heads % c.kvHeads !== 0)
    throw new HatError(
      'BAD_OPTION',
      `model config: ${c.heads} heads are not a multiple of ${c.kvHeads} KV heads`,
      'pick KV heads that divide the heads',
    );
  if (c.headDim % 2 !== 0)
    throw new HatError('BAD_OPTION', `model config: head size ${c.headDim} must be even for rotary embeddings`);
}

/** Public architectures at their real sizes (random weights): what benchmarks need. */
export const PRESETS: Record<string, LlamaConfig> = {
  'qwen2.5-0.5b': llamaConfig({
    vocabSize: 151936,
    hiddenSize: 896,
    intermediateSize: 4864,
    layers: 24,
    heads: 14,
    kvHeads: 2,
    ropeTheta: 1000000,
    rmsNormEps: 1e-6,
    tiedEmbeddings: true,
    attentionBias: true,
    maxPositions: 32768,
    bosTokenId: 151643,
    eosTokenId: 151645,
  }),
  'tinyllama-1.1b': llamaConfig({
    vocabSize: 32000,
    hiddenSize: 2048,
    intermediateSize: 5632,
    layers: 22,
    heads: 32,
    kvHeads: 4,
    bosTokenId: 1,
    eosTokenId: 2,
  }),
  'llama-7b': llamaConfig({
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 11008,
    layers: 32,
    heads: 32,
    kvHeads: 32,
    rmsNormEps: 1e-6,
    maxPositions: 4096,
    bosTokenId: 1,
    eosTokenId: 2,
  }),
};

export function presetConfig(name: string): LlamaConfig {
  const config = Object.hasOwn(PRESETS, name) ? PRESETS[name] : undefined;
  if (!config) {
    throw new HatError(
      'BAD_OPTION',
      `unknown --config '${name}'`,
      `use one of ${Object.keys(PRESETS).join(', ')}, or give explicit dimensions`,
    );
  }
  return config;
}

export type WeightKind = 'matrix' | 'norm' | 'bias' | 'embedding';

export interface WeightSpec {
  name: string;
  /** Matrices are stored [in, out] so the graph multiplies activations by them directly (x @ W). */
  dims: number[];
  kind: WeightKind;
}

/** Every parameter tensor of the model, in file order. Names follow Hugging Face's Llama modules. */
export function weightSpecs(c: LlamaConfig): WeightSpec[] {
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const specs: WeightSpec[] = [
    { name: 'model.embed_tokens.weight', dims: [c.vocabSize, c.hiddenSize], kind: 'embedding' },
  ];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, dims: [c.hiddenSize], kind: 'norm' },
      { name: `${p}.self_attn.q_proj.weight`, dims: [c.hiddenSize, q], kind: 'matrix' },
      { name: `${p}.self_attn.k_proj.weight`, dims: [c.hiddenSize, kv], kind: 'matrix' },
      { name: `${p}.self_attn.v_proj.weight`, dims: [c.hiddenSize, kv], kind: 'matrix' },
    );
    if (c.attentionBias) {
      specs.push(
        { name: `${p}.self_attn.q_proj.bias`, dims: [q], kind: 'bias' },
        { name: `${p}.self_attn.k_proj.bias`, dims: [kv], kind: 'bias' },
        { name: `${p}.self_attn.v_proj.bias`, dims: [kv], kind: 'bias' },
      );
    }
    specs.push(
      { name: `${p}.self_attn.o_proj.weight`, dims: [q, c.hiddenSize], kind: 'matrix' },
      { name: `${p}.post_attention_layernorm.weight`, dims: [c.hiddenSize], kind: 'norm' },
      { name: `${p}.mlp.gate_proj.weight`, dims: [c.hiddenSize, c.intermediateSize], kind: 'matrix' },
      { name: `${p}.mlp.up_proj.weight`, dims: [c.hiddenSize, c.intermediateSize], kind: 'matrix' },
      { name: `${p}.mlp.down_proj.weight`, dims: [c.intermediateSize, c.hiddenSize], kind: 'matrix' },
    );
  }
  specs.push({ name: 'model.norm.weight', dims: [c.hiddenSize], kind: 'norm' });
  if (!c.tiedEmbeddings) specs.push({ name: 'lm_head.weight', dims: [c.hiddenSize, c.vocabSize], kind: 'matrix' });
  return specs;
}

export function parameterCount(c: LlamaConfig): number {
  return weightSpecs(c).reduce((sum, s) => sum + s.dims.reduce((a, b) => a * b, 1), 0);
}

/** config.json beside a model, in Hugging Face's field names so other tools can read it too. */
export function toHfConfig(c: LlamaConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    head_dim: c.headDim,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.rmsNormEps,
    tie_word_embeddings: c.tiedEmbeddings,
    attention_bias: c.attentionBias,
    max_position_embeddings: c.maxPositions,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
  };
}

/** KV heads for `heads` query heads grouped as in `base`: an error when the groups do not divide them. */
function groupedKvHeads(base: LlamaConfig, heads: number): number {
  const group = base.heads / base.kvHeads;
  if (heads % group !== 0)
    throw new HatError(
      'BAD_OPTION',
      `--heads ${heads} cannot keep the preset's ${group} query heads per KV head (${base.heads}/${base.kvHeads})`,
      `give --heads a multiple of ${group}, or set --kv-heads too`,
    );
  return heads / group;
}

const DIM_FLAGS: Record<string, string> = {
  vocabSize: '--vocab-size',
  hiddenSize: '--hidden-size',
  intermediateSize: '--intermediate-size',
  layers: '--layers',
  heads: '--heads',
};

/**
 * A preset with some dimensions overridden (e.g. llama-7b with 2 layers), or explicit dimensions alone.
 * KV heads default to heads without a preset; with one, overriding heads keeps the preset's query heads per KV
 * head (multi-head stays multi-head, grouped-query keeps its groups). The head size is re-derived when hidden
 * size or heads change.
 */
export function configFrom(preset: string | undefined, overrides: Partial<LlamaConfig>): LlamaConfig {
  if (preset) {
    const base = presetConfig(preset);
    const kvHeads =
      overrides.kvHeads ?? (overrides.heads === undefined ? base.kvHeads : groupedKvHeads(base, overrides.heads));
    const reshaped = overrides.hiddenSize !== undefined || overrides.heads !== undefined;
    const headDim =
      overrides.headDim ??
      (reshaped ? (overrides.hiddenSize ?? base.hiddenSize) / (overrides.heads ?? base.heads) : base.headDim);
    // A smaller vocabulary keeps the preset's special tokens at the same distance from its end (Qwen2.5's sit at
    // 151,643 of 151,936): ids past the vocabulary would make every tool that starts from BOS fail.
    const vocab = overrides.vocabSize ?? base.vocabSize;
    const special = (id: number | undefined) =>
      id === undefined || id < vocab ? id : Math.max(0, vocab - (base.vocabSize - id));
    return llamaConfig({
      ...base,
      bosTokenId: special(base.bosTokenId),
      eosTokenId: special(base.eosTokenId),
      ...overrides,
      kvHeads,
      headDim,
    });
  }
  const missing = Object.keys(DIM_FLAGS).filter((key) => overrides[key as keyof LlamaConfig] === undefined);
  if (missing.length) {
    throw new HatError(
      'BAD_OPTION',
      `without --config, give ${missing.map((key) => DIM_FLAGS[key]).join(', ')}`,
      `or pick a preset: --config ${Object.keys(PRESETS).join('|')}`,
    );
  }
  return llamaConfig({ kvHeads: overrides.heads, ...overrides } as ConfigInput);
}
