/**
 * The composed-equivalence check shared by `hat split` (before it publishes a split) and the tests: the three
 * parts run in sequence must reproduce the full model — logits and every present.* — for (a) a prefill on an
 * empty cache, (b) single-token decode steps, (c) a multi-token step on a non-empty cache, compared with the
 * full model run token by token. (c) is "unsupported" when the parts cannot run it (an export's traced mask).
 */
import { HatError } from '../errors.ts';
import { PartRunner, type StepOutput } from '../runtime/part-runner.ts';
import { openPart } from '../runtime/split-dir.ts';
import { tensorToFloat32, type Tensor } from '../runtime/session.ts';
import type { SplitManifest } from './manifest.ts';

export type CaseStatus = 'passed' | 'failed' | 'unsupported';

export interface CaseResult {
  name: string;
  status: CaseStatus;
  /** Largest |composed − full| over logits and every present.* tensor. */
  maxAbsError?: number;
  /** Where that error was largest. */
  worst?: string;
  detail?: string;
}

export interface VerifyReport {
  passed: boolean;
  tolerance: number;
  cases: CaseResult[];
  multiTokenCachedSteps: boolean;
}

export interface VerifyOptions {
  prefill?: number;
  decodeSteps?: number;
  multiTokenChunk?: number;
  /** Token ids to use; deterministic pseudo-random ids by default. */
  tokens?: number[];
}

// Expected failures (an export's broken multi-token mask) are reported by hat, not logged by onnxruntime.
const QUIET = { quietRuntimeLog: true };

export const TOLERANCE = { float32: 1e-5, float16: 2e-3 } as const;

class Comparison {
  maxAbsError = 0;
  worst = '';
  add(label: string, expected: Float32Array, actual: Float32Array): void {
    if (expected.length !== actual.length) throw new HatError('BAD_SPLIT', `${label}: composed parts gave ${actual.length} values, the model ${expected.length}`);
    for (let i = 0; i < expected.length; i++) {
      const error = Math.abs(expected[i] - actual[i]);
      if (!(error <= this.maxAbsError)) {
        this.maxAbsError = Number.isNaN(error) ? Infinity : error;
        this.worst = label;
      }
    }
  }
  absorb(other: Comparison): void {
    if (other.maxAbsError >= this.maxAbsError) Object.assign(this, { maxAbsError: other.maxAbsError, worst: other.worst });
  }
}

interface Composed { input: PartRunner; middle: PartRunner; output: PartRunner }

async function composedStep(parts: Composed, ids: number[]): Promise<StepOutput> {
  const hidden = await parts.input.step({ ids }, ids.length);
  const middle = await parts.middle.step({ hidden: hidden.data }, ids.length);
  return parts.output.step({ hidden: middle.data }, ids.length);
}

function cacheOf(parts: PartRunner[]): Map<string, Tensor> {
  return new Map(parts.flatMap((p) => [...p.snapshot().tensors]));
}

function compareStep(label: string, full: StepOutput[], fullCache: Map<string, Tensor>, composed: StepOutput, composedCache: Map<string, Tensor>): Comparison {
  const comparison = new Comparison();
  const expected = new Float32Array(full.reduce((n, s) => n + s.data.length, 0));
  let offset = 0;
  for (const step of full) { expected.set(step.data, offset); offset += step.data.length; }
  comparison.add(`${label} logits`, expected, composed.data);
  for (const [name, tensor] of fullCache) {
    const other = composedCache.get(name);
    if (!other) throw new HatError('BAD_SPLIT', `no part returns the cache for ${name}`);
    comparison.add(`${label} ${name.replace('past_key_values', 'present')}`, tensorToFloat32(tensor), tensorToFloat32(other));
  }
  return comparison;
}

export function pseudoRandomTokens(count: number, vocabSize: number, seed = 12345): number[] {
  let state = seed >>> 0;
  return Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % vocabSize;
  });
}

export function fullModelRunner(sourcePath: string, manifest: Pick<SplitManifest, 'kv'>): Promise<PartRunner> {
  const kv = [...manifest.kv.input, ...manifest.kv.middle, ...manifest.kv.output];
  return PartRunner.open(sourcePath, { idsInput: 'input_ids', output: 'logits', kv }, QUIET, 'full model');
}

export async function verifySplit(sourcePath: string, splitDir: string, manifest: SplitManifest, options: VerifyOptions = {}): Promise<VerifyReport> {
  const prefill = options.prefill ?? 4;
  const decodeSteps = options.decodeSteps ?? 3;
  const chunk = options.multiTokenChunk ?? 3;
  const vocab = manifest.model?.vocabSize ?? 2;
  const tokens = options.tokens ?? pseudoRandomTokens(prefill + decodeSteps + chunk, vocab);
  const tolerance = TOLERANCE[manifest.hidden.dtype];
  const full = await fullModelRunner(sourcePath, manifest);
  const parts: Composed = {
    input: await openPart(splitDir, manifest, 'input', QUIET),
    middle: await openPart(splitDir, manifest, 'middle', QUIET),
    output: await openPart(splitDir, manifest, 'output', QUIET),
  };
  const all = [parts.input, parts.middle, parts.output];
  const cases: CaseResult[] = [];
  const judge = (name: string, comparison: Comparison): void => {
    cases.push({ name, status: comparison.maxAbsError <= tolerance ? 'passed' : 'failed', maxAbsError: comparison.maxAbsError, worst: comparison.worst });
  };
  try {
    const prompt = tokens.slice(0, prefill);
    const expected = await full.step({ ids: prompt }, prompt.length);
    const actual = await composedStep(parts, prompt);
    judge(`prefill of ${prefill} tokens on an empty cache`, compareStep('prefill', [expected], full.snapshot().tensors, actual, cacheOf(all)));

    const decode = new Comparison();
    for (let i = 0; i < decodeSteps; i++) {
      const id = [tokens[prefill + i]];
      decode.absorb(compareStep(`decode ${i + 1}`, [await full.step({ ids: id }, 1)], full.snapshot().tensors, await composedStep(parts, id), cacheOf(all)));
    }
    judge(`${decodeSteps} single-token decode steps`, decode);

    const ids = tokens.slice(prefill + decodeSteps, prefill + decodeSteps + chunk);
    const name = `${chunk}-token step on a cache of ${prefill + decodeSteps}`;
    const reference: StepOutput[] = [];
    for (const id of ids) reference.push(await full.step({ ids: [id] }, 1));
    let composed: StepOutput;
    try {
      composed = await composedStep(parts, ids);
    } catch (error) {
      cases.push({ name, status: 'unsupported', detail: (error as Error).message });
      return { passed: cases.every((c) => c.status !== 'failed'), tolerance, cases, multiTokenCachedSteps: false };
    }
    judge(name, compareStep('multi-token', reference, full.snapshot().tensors, composed, cacheOf(all)));
    const multi = cases[cases.length - 1];
    return { passed: cases.every((c) => c.status !== 'failed'), tolerance, cases, multiTokenCachedSteps: multi.status === 'passed' };
  } finally {
    for (const runner of [full, ...all]) await runner.session.release();
  }
}

/** Whether the model itself runs a multi-token step on a non-empty cache, and matches token-by-token steps. */
export async function probeMultiTokenStep(sourcePath: string, manifest: Pick<SplitManifest, 'kv' | 'hidden'>, vocabSize: number): Promise<CaseResult> {
  const full = await fullModelRunner(sourcePath, manifest);
  const tokens = pseudoRandomTokens(6, vocabSize);
  const name = '2-token step on a cache of 4';
  try {
    await full.step({ ids: tokens.slice(0, 4) }, 4);
    const afterPrompt = full.snapshot();
    const reference = [await full.step({ ids: [tokens[4]] }, 1), await full.step({ ids: [tokens[5]] }, 1)];
    const referenceCache = full.snapshot().tensors;
    full.restore(afterPrompt);
    let chunk: StepOutput;
    try {
      chunk = await full.step({ ids: tokens.slice(4, 6) }, 2);
    } catch (error) {
      return { name, status: 'unsupported', detail: (error as Error).message };
    }
    const comparison = compareStep('multi-token', reference, referenceCache, chunk, full.snapshot().tensors);
    const tolerance = TOLERANCE[manifest.hidden.dtype];
    return { name, status: comparison.maxAbsError <= tolerance ? 'passed' : 'failed', maxAbsError: comparison.maxAbsError, worst: comparison.worst,
      ...(comparison.maxAbsError <= tolerance ? {} : { detail: 'runs, but differs from token-by-token steps' }) };
  } finally {
    await full.session.release();
  }
}
