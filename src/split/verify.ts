/**
 * The composed-equivalence check shared by `hat split` (before it publishes a split) and the tests: the three
 * parts run in sequence must reproduce the full model — logits and every present.* — for (a) a prefill on an
 * empty cache, (b) single-token decode steps, (c) a multi-token step on a non-empty cache, compared with the
 * full model run token by token. (c) is "unsupported" when the parts cannot run it (an export's traced mask).
 *
 * Structure and numerics are judged apart. onnxruntime's fusions at the default optimization level differ between
 * the whole graph and a part (a cut changes which patterns fuse), which moves fp32 logits by up to ~1e-3 where they
 * are large. So the STRUCTURAL check runs both sides with graph optimizations disabled and must agree to float
 * reassociation (per tensor, max|composed − full| ≤ atol + rtol·max|full|); it alone can fail a split. The SERVING
 * check then runs both as run-device and serve-cloud do (all optimizations) and only measures: max abs / rel
 * deviation and whether any greedy argmax changed — a warning, never a failure.
 */
import { HatError } from '../errors.ts';
import { PartRunner, type StepOutput } from '../runtime/part-runner.ts';
import { openAll, openPart } from '../runtime/split-dir.ts';
import { createSession, tensorToFloat32, type SessionOptions, type Tensor } from '../runtime/session.ts';
import { logitsOutputOf } from './kv-names.ts';
import type { HiddenDType, SplitManifest } from './manifest.ts';

export type CaseStatus = 'passed' | 'failed' | 'unsupported';

export interface CaseResult {
  name: string;
  status: CaseStatus;
  /** Largest |composed − full| over logits and every present.* tensor. */
  maxAbsError?: number;
  /** Largest max|composed − full| / max|full| over the compared tensors (the error relative to the tensor's scale). */
  maxRelError?: number;
  /** Where the abs error was largest. */
  worst?: string;
  /** Logits rows whose argmax differs between the two sides. */
  argmaxChanges?: number;
  detail?: string;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** What the serving configuration (all graph optimizations, as run-device and serve-cloud run) deviates by. */
export interface ServingDeviation {
  optimization: 'all';
  maxAbsError: number;
  maxRelError: number;
  worst: string;
  /** Greedy argmax changes over every probe step's logits rows. */
  argmaxChanges: number;
  /** Whether the deviation stays within the structural tolerance (no warning). */
  withinTolerance: boolean;
  cases: CaseResult[];
}

export interface VerifyReport {
  passed: boolean;
  tolerance: Tolerance;
  /** The structural check (graph optimizations disabled on both sides): what decides `passed`. */
  cases: CaseResult[];
  multiTokenCachedSteps: boolean;
  /** Measured after a structural pass (absent when it failed, or with `serving: false`). */
  serving?: ServingDeviation;
}

export interface VerifyOptions {
  prefill?: number;
  decodeSteps?: number;
  multiTokenChunk?: number;
  /** Token ids to use; deterministic pseudo-random ids by default. */
  tokens?: number[];
  /** Overrides of the dtype's default tolerance (as Optimum's --atol). */
  atol?: number;
  rtol?: number;
  /** Also measure the serving configuration (default true). */
  serving?: boolean;
}

/** Float reassociation bounds per hidden dtype; both scale with the reference's magnitude through rtol. */
export const DEFAULT_TOLERANCE: Record<HiddenDType, Tolerance> = {
  float32: { atol: 1e-5, rtol: 1e-5 },
  float16: { atol: 2e-3, rtol: 2e-3 },
};

export function toleranceFor(dtype: HiddenDType, options: Pick<VerifyOptions, 'atol' | 'rtol'> = {}): Tolerance {
  return { atol: options.atol ?? DEFAULT_TOLERANCE[dtype].atol, rtol: options.rtol ?? DEFAULT_TOLERANCE[dtype].rtol };
}

// Expected failures (an export's broken multi-token mask) are reported by hat, not logged by onnxruntime.
const STRUCTURAL: SessionOptions = { quietRuntimeLog: true, graphOptimizationLevel: 'disabled' };
const SERVING: SessionOptions = { quietRuntimeLog: true, graphOptimizationLevel: 'all' };

class Comparison {
  maxAbsError = 0;
  maxRelError = 0;
  worst = '';
  argmaxChanges = 0;
  /** Largest, over tensors, of max|error| − (atol + rtol·max|expected|): positive means outside the tolerance. */
  excess = -Infinity;
  constructor(private readonly tolerance: Tolerance) {}

  add(label: string, expected: Float32Array, actual: Float32Array, rowWidth?: number): void {
    if (expected.length !== actual.length)
      throw new HatError(
        'BAD_SPLIT',
        `${label}: composed parts gave ${actual.length} values, the model ${expected.length}`,
      );
    let tensorError = 0;
    let tensorMagnitude = 0;
    for (let i = 0; i < expected.length; i++) {
      const error = Math.abs(expected[i] - actual[i]);
      if (!(error <= tensorError)) tensorError = Number.isNaN(error) ? Infinity : error;
      if (!(error <= this.maxAbsError)) {
        this.maxAbsError = Number.isNaN(error) ? Infinity : error;
        this.worst = label;
      }
      tensorMagnitude = Math.max(tensorMagnitude, Math.abs(expected[i]));
    }
    // Reassociation error grows with the terms summed, which the tensor's largest value bounds better than each
    // element does (cancellation makes small results out of large terms).
    const { atol, rtol } = this.tolerance;
    this.excess = Math.max(this.excess, tensorError - (atol + rtol * tensorMagnitude));
    if (tensorError > 0) this.maxRelError = Math.max(this.maxRelError, tensorError / (tensorMagnitude || 1));
    if (rowWidth) {
      for (let row = 0; row < expected.length / rowWidth; row++) {
        const slice = (a: Float32Array) => a.subarray(row * rowWidth, (row + 1) * rowWidth);
        if (argmaxOf(slice(expected)) !== argmaxOf(slice(actual))) this.argmaxChanges++;
      }
    }
  }

  absorb(other: Comparison): void {
    if (other.maxAbsError >= this.maxAbsError)
      Object.assign(this, { maxAbsError: other.maxAbsError, worst: other.worst });
    this.maxRelError = Math.max(this.maxRelError, other.maxRelError);
    this.excess = Math.max(this.excess, other.excess);
    this.argmaxChanges += other.argmaxChanges;
  }

  get withinTolerance(): boolean {
    return this.excess <= 0;
  }

  result(name: string): CaseResult {
    return {
      name,
      status: this.withinTolerance ? 'passed' : 'failed',
      maxAbsError: this.maxAbsError,
      maxRelError: this.maxRelError,
      worst: this.worst,
      argmaxChanges: this.argmaxChanges,
    };
  }
}

function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

interface Composed {
  input: PartRunner;
  middle: PartRunner;
  output: PartRunner;
}

async function composedStep(parts: Composed, ids: number[]): Promise<StepOutput> {
  const hidden = await parts.input.step({ ids }, ids.length);
  const middle = await parts.middle.step({ hidden: hidden.data }, ids.length);
  return parts.output.step({ hidden: middle.data }, ids.length);
}

function cacheOf(parts: PartRunner[]): Map<string, Tensor> {
  return new Map(parts.flatMap((p) => [...p.snapshot().tensors]));
}

function compareStep(
  tolerance: Tolerance,
  label: string,
  full: StepOutput[],
  fullCache: Map<string, Tensor>,
  composed: StepOutput,
  composedCache: Map<string, Tensor>,
): Comparison {
  const comparison = new Comparison(tolerance);
  const expected = new Float32Array(full.reduce((n, s) => n + s.data.length, 0));
  let offset = 0;
  for (const step of full) {
    expected.set(step.data, offset);
    offset += step.data.length;
  }
  comparison.add(`${label} logits`, expected, composed.data, composed.cols);
  for (const [name, tensor] of fullCache) {
    const other = composedCache.get(name);
    if (!other) throw new HatError('BAD_SPLIT', `no part returns the cache for ${name}`);
    comparison.add(
      `${label} ${name.replace('past_key_values', 'present')}`,
      tensorToFloat32(tensor),
      tensorToFloat32(other),
    );
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

export async function fullModelRunner(
  sourcePath: string,
  manifest: Pick<SplitManifest, 'kv'>,
  options: SessionOptions = STRUCTURAL,
): Promise<PartRunner> {
  const kv = [...manifest.kv.input, ...manifest.kv.middle, ...manifest.kv.output];
  const session = await createSession(sourcePath, options, 'full model');
  // The source may name its logits otherwise; the split's output part names them `logits` (parts.ts).
  const output = logitsOutputOf(session.outputNames) ?? 'logits';
  return PartRunner.fromSession(session, { idsInput: 'input_ids', output, kv });
}

interface ProbeResult {
  cases: CaseResult[];
  comparisons: Comparison[];
  multiTokenRan: boolean;
}

/** Runs the probe steps on the full model and the composed parts, both opened with `sessionOptions`. */
async function probeSplit(
  sourcePath: string,
  splitDir: string,
  manifest: SplitManifest,
  tokens: number[],
  counts: { prefill: number; decodeSteps: number; chunk: number },
  tolerance: Tolerance,
  sessionOptions: SessionOptions,
): Promise<ProbeResult> {
  const { prefill, decodeSteps, chunk } = counts;
  const [full, input, middle, output] = await openAll([
    () => fullModelRunner(sourcePath, manifest, sessionOptions),
    ...(['input', 'middle', 'output'] as const).map((name) => () => openPart(splitDir, manifest, name, sessionOptions)),
  ]);
  const parts: Composed = { input, middle, output };
  const all = [parts.input, parts.middle, parts.output];
  const cases: CaseResult[] = [];
  const comparisons: Comparison[] = [];
  const judge = (name: string, comparison: Comparison): void => {
    comparisons.push(comparison);
    cases.push(comparison.result(name));
  };
  try {
    const prompt = tokens.slice(0, prefill);
    const expected = await full.step({ ids: prompt }, prompt.length);
    const actual = await composedStep(parts, prompt);
    judge(
      `prefill of ${prefill} tokens on an empty cache`,
      compareStep(tolerance, 'prefill', [expected], full.snapshot().tensors, actual, cacheOf(all)),
    );

    const decode = new Comparison(tolerance);
    for (let i = 0; i < decodeSteps; i++) {
      const id = [tokens[prefill + i]];
      const reference = await full.step({ ids: id }, 1);
      decode.absorb(
        compareStep(
          tolerance,
          `decode ${i + 1}`,
          [reference],
          full.snapshot().tensors,
          await composedStep(parts, id),
          cacheOf(all),
        ),
      );
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
      return { cases, comparisons, multiTokenRan: false };
    }
    judge(name, compareStep(tolerance, 'multi-token', reference, full.snapshot().tensors, composed, cacheOf(all)));
    return { cases, comparisons, multiTokenRan: true };
  } finally {
    for (const runner of [full, ...all]) await runner.session.release();
  }
}

export async function verifySplit(
  sourcePath: string,
  splitDir: string,
  manifest: SplitManifest,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const counts = {
    prefill: options.prefill ?? 4,
    decodeSteps: options.decodeSteps ?? 3,
    chunk: options.multiTokenChunk ?? 3,
  };
  const vocab = manifest.model?.vocabSize ?? 2;
  const tokens = options.tokens ?? pseudoRandomTokens(counts.prefill + counts.decodeSteps + counts.chunk, vocab);
  const tolerance = toleranceFor(manifest.hidden.dtype, options);

  const structural = await probeSplit(sourcePath, splitDir, manifest, tokens, counts, tolerance, STRUCTURAL);
  const passed = structural.cases.every((c) => c.status !== 'failed');
  const multi = structural.cases[structural.cases.length - 1];
  const report: VerifyReport = {
    passed,
    tolerance,
    cases: structural.cases,
    multiTokenCachedSteps: structural.multiTokenRan && multi.status === 'passed',
  };
  if (!passed || options.serving === false) return report;

  const serving = await probeSplit(sourcePath, splitDir, manifest, tokens, counts, tolerance, SERVING);
  const total = new Comparison(tolerance);
  for (const comparison of serving.comparisons) total.absorb(comparison);
  report.serving = {
    optimization: 'all',
    maxAbsError: total.maxAbsError,
    maxRelError: total.maxRelError,
    worst: total.worst,
    argmaxChanges: total.argmaxChanges,
    withinTolerance: total.withinTolerance,
    cases: serving.cases,
  };
  return report;
}

/**
 * Whether the model itself runs a multi-token step on a non-empty cache and matches token-by-token steps
 * (graph optimizations disabled, as the structural check).
 */
export async function probeMultiTokenStep(
  sourcePath: string,
  manifest: Pick<SplitManifest, 'kv' | 'hidden'>,
  vocabSize: number,
  options: Pick<VerifyOptions, 'atol' | 'rtol'> = {},
): Promise<CaseResult> {
  const full = await fullModelRunner(sourcePath, manifest);
  const tokens = pseudoRandomTokens(6, vocabSize);
  const tolerance = toleranceFor(manifest.hidden.dtype, options);
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
    const result = compareStep(
      tolerance,
      'multi-token',
      reference,
      referenceCache,
      chunk,
      full.snapshot().tensors,
    ).result(name);
    return result.status === 'passed' ? result : { ...result, detail: 'runs, but differs from token-by-token steps' };
  } finally {
    await full.session.release();
  }
}
