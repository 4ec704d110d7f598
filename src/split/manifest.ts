/**
 * manifest.json of a split directory, format "hat-split/1": everything a device or the cloud needs to load its
 * parts and to agree on the wire. Written by `hat split`, extended by `hat train-adapter` (the `adapter` field).
 */
export const MANIFEST_FORMAT = 'hat-split/1';

export type HiddenDType = 'float32' | 'float16';

export interface TensorSpec {
  name: string;
  /** onnxruntime type name: 'float32', 'float16', 'int64', ... */
  type: string;
  /** Numbers for fixed dims, strings for symbolic ones. */
  shape: Array<number | string>;
}

export interface PartManifest {
  file: string;
  /** External-data files this part reads, relative to the split directory (or absolute with --weights reference). */
  dataFiles: string[];
  /** Decoder layers this part owns, as [first, end) indices of the source model. */
  layers: [number, number];
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface KvPair {
  layer: number;
  pastKey: string;
  pastValue: string;
  presentKey: string;
  presentValue: string;
}

export interface AdapterManifest {
  kind: 'attention' | 'linear';
  file: string;
  dataFiles?: string[];
  /**
   * The adapter's hidden-state input; its output is named after the output part's input
   * (boundaries.middleToOutput).
   */
  input: string;
  output: string;
  /** The adapter's own KV cache (attention adapters). */
  kv?: KvPair[];
  /** The draft threshold the device starts from (chosen by the η sweep). */
  defaultThreshold: number;
  metrics: Record<string, unknown>;
  [key: string]: unknown;
}

export interface SplitManifest {
  format: typeof MANIFEST_FORMAT;
  source: {
    file: string;
    sha256: string;
    layers: number;
    /** External-data files beside the source and their sizes. */
    dataFiles?: Array<{ file: string; bytes: number }>;
  };
  hidden: { size: number; dtype: HiddenDType };
  attention: { heads?: number; kvHeads?: number; headDim?: number; kvLayout: string };
  boundaries: { inputToMiddle: string; middleToOutput: string };
  parts: { input: PartManifest; middle: PartManifest; output: PartManifest };
  /** KV-cache tensors per part, original names kept. */
  kv: { input: KvPair[]; middle: KvPair[]; output: KvPair[] };
  /** How per-layer preludes (mask, rotary) are fed to each part. */
  prelude: Record<string, unknown>;
  privacy: { passed: boolean; checks: string[] };
  /** Whether a multi-token step on a non-empty cache runs correctly on the parts. */
  multiTokenCachedSteps: boolean;
  /** tokenizer.json copied beside the parts, when the source model had one. */
  tokenizer?: string;
  /** Other files copied from beside the source model (config.json, tokenizer_config.json, ...). */
  extraFiles?: string[];
  /** How weights were written: 'copy' (each part has its own data file) or 'reference' (hard links to the source's). */
  weights?: { mode: 'copy' | 'reference'; bytes: Record<'input' | 'middle' | 'output', number> };
  /**
   * The composed-equivalence check `hat split` ran before publishing (absent with --no-verify). `cases` is the
   * structural check (graph optimizations disabled on both sides, per tensor max|composed − full| ≤ atol +
   * rtol·max|full|), which
   * alone decides `passed`; `serving` is what the optimized runs that run-device and serve-cloud use deviate by.
   */
  verification?: {
    passed: boolean;
    tolerance: { atol: number; rtol: number };
    cases: Array<{ name: string; status: string; maxAbsError?: number; maxRelError?: number; detail?: string }>;
    serving?: {
      optimization: 'all';
      maxAbsError: number;
      maxRelError: number;
      worst: string;
      argmaxChanges: number;
      withinTolerance: boolean;
    };
  };
  /**
   * Whether serve-cloud may run several sessions' requests as one padded batch of the middle part, decided from
   * the middle graph at split time (src/split/batching.ts). Older splits lack it: serve-cloud decides at load.
   */
  batching?: BatchingDecision;
  /** Model-level facts a runtime needs (bos/eos ids, vocab size). */
  model?: { vocabSize?: number; bosTokenId?: number; eosTokenId?: number };
  adapter?: AdapterManifest;
}

/**
 * 'padded': past left-padded, rows right-padded, attention_mask 0 on padding, per-row position_ids — exact.
 * 'single-row': only one-row requests batch (GroupQueryAttention refuses several rows on a past).
 * 'none': one request per run.
 */
export type BatchingMode = 'padded' | 'single-row' | 'none';

export interface BatchingDecision {
  mode: BatchingMode;
  reason: string;
  /**
   * serve-cloud may feed a batch's presents back as the same sessions' next pasts, holes (rolled-back or padded
   * positions, masked) and all: true unless a sliding window counts positions by index. Absent in splits written
   * before the field: serve-cloud decides at load (serve.ts).
   */
  inPlace?: boolean;
}
