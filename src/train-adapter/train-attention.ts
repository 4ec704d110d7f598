/**
 * Training loop of the attention adapter: stream batches from a PairSource, forward through the adapter and
 * the frozen output part, backward, AdamW. Core code: progress goes to the reporter, nothing prints.
 */
import { HatError } from '../errors.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import {
  adapterBackward,
  adapterForward,
  initAdapterParams,
  parameterCount,
  validateConfig,
  type AdapterParams,
  type AttentionAdapterConfig,
  type InitOptions,
} from './attention-adapter.ts';
import type { MatMulEngine } from './matmul.ts';
import { createOrtMatMul } from './matmul-ort.ts';
import { AdamW, DEFAULT_ADAMW, learningRate, type AdamWOptions } from './optimizer.ts';
import {
  checkHead,
  DEFAULT_LOSS,
  draftLoss,
  hiddenOf,
  type LossOptions,
  type LossValue,
  type OutputHead,
} from './output-head.ts';
import type { PairSource } from './pair-source.ts';

/** Steps between re-fits of the schedule to a time budget. */
const REFIT_EVERY = 10;
/** Default warm-up: this fraction of all steps. */
const WARMUP_FRACTION = 0.05;

export interface TrainOptions {
  config: AttentionAdapterConfig;
  init?: InitOptions;
  /** Passes over the source. */
  epochs: number;
  /** Peak learning rate. */
  lr: number;
  /** Warm-up steps (default: 5% of all steps, at least 1). */
  warmupSteps?: number;
  /** Final learning rate as a fraction of the peak (default 0.1). */
  lrFloor?: number;
  adamw?: Partial<AdamWOptions>;
  loss?: Partial<LossOptions>;
  /** Stop after this many steps even if epochs remain; the schedule then ends at this step. */
  maxSteps?: number;
  /**
   * A time budget for the loop: the schedule is re-fitted every few steps to the steps the measured speed
   * allows, so the learning rate still completes its cosine when time, not data, runs out.
   */
  maxSeconds?: number;
  /** Held-out pairs, evaluated before and after training. */
  validation?: PairSource;
  /** Default: onnxruntime kernels, created and released here. */
  engine?: MatMulEngine;
  threads?: number;
}

export interface StepRecord {
  step: number;
  lr: number;
  loss: number;
  smoothL1: number;
  crossEntropy: number;
  top1Agreement: number;
  gradNorm: number;
}

export interface TrainResult {
  params: AdapterParams;
  config: AttentionAdapterConfig;
  parameters: number;
  steps: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** Up to ~200 evenly spaced steps. */
  history: StepRecord[];
  validationBefore?: LossValue;
  validationAfter?: LossValue;
}

/** Mean loss over a source (rows-weighted), no gradients. */
export async function evaluateAdapter(
  params: AdapterParams | undefined,
  config: AttentionAdapterConfig,
  source: PairSource,
  head: OutputHead,
  loss: LossOptions,
  engine: MatMulEngine,
): Promise<LossValue> {
  let elements = 0,
    rows = 0,
    smoothL1 = 0,
    crossEntropy = 0,
    agreed = 0;
  for await (const batch of source.batches()) {
    // No params: the "no adapter" baseline, the output part applied straight to h_K.
    const prediction = params ? (await adapterForward(params, config, batch, engine)).output : batch.hidden;
    const { loss: value } = await draftLoss(head, prediction, batch.target, batch.targetTokens, loss, engine, false);
    smoothL1 += value.smoothL1 * prediction.length;
    elements += prediction.length;
    crossEntropy += value.crossEntropy * value.rows;
    agreed += value.top1Agreement * value.rows;
    rows += value.rows;
  }
  const meanL1 = elements ? smoothL1 / elements : 0;
  const meanCe = rows ? crossEntropy / rows : 0;
  return {
    total: meanL1 + loss.ceWeight * meanCe,
    smoothL1: meanL1,
    crossEntropy: meanCe,
    top1Agreement: rows ? agreed / rows : 0,
    rows,
  };
}

export async function trainAttentionAdapter(
  source: PairSource,
  head: OutputHead,
  options: TrainOptions,
  reporter: Reporter = silentReporter,
): Promise<TrainResult> {
  validateConfig(options.config);
  checkHead(head);
  if (source.hidden !== options.config.hidden || hiddenOf(head) !== options.config.hidden) {
    throw new HatError(
      'BAD_OPTION',
      `hidden sizes disagree: data ${source.hidden}, head ${hiddenOf(head)}, adapter ${options.config.hidden}`,
    );
  }
  if (!(options.epochs > 0) || !(options.lr > 0) || source.batchesPerPass <= 0) {
    throw new HatError(
      'BAD_OPTION',
      `training needs epochs > 0, a learning rate > 0 and data ` +
        `(got ${options.epochs}, ${options.lr}, ${source.batchesPerPass} batches)`,
    );
  }
  const loss: LossOptions = { ...DEFAULT_LOSS, ...options.loss };
  const engine = options.engine ?? (await createOrtMatMul({ threads: options.threads }));
  try {
    const params = initAdapterParams(options.config, options.init);
    const optimizer = new AdamW(params, { ...DEFAULT_ADAMW, ...options.adamw });
    const plannedSteps = Math.min(options.maxSteps ?? Infinity, options.epochs * source.batchesPerPass);
    const warmupFor = (steps: number) => options.warmupSteps ?? Math.max(1, Math.round(steps * WARMUP_FRACTION));
    const schedule = {
      peak: options.lr,
      warmupSteps: warmupFor(plannedSteps),
      totalSteps: plannedSteps,
      floor: options.lrFloor ?? 0.1,
    };
    const validationBefore = options.validation
      ? await evaluateAdapter(params, options.config, options.validation, head, loss, engine)
      : undefined;

    const progress = reporter.progress(
      `training the attention adapter (${parameterCount(options.config).toLocaleString('en')} parameters)`,
    );
    const history: StepRecord[] = [];
    const started = Date.now();
    let step = 0,
      tokens = 0;
    let latest: StepRecord | undefined;
    const elapsed = () => (Date.now() - started) / 1000;
    const outOfTime = () =>
      step >= schedule.totalSteps || (options.maxSeconds !== undefined && elapsed() >= options.maxSeconds);
    const refitSchedule = () => {
      if (options.maxSeconds === undefined || step % REFIT_EVERY !== 0) return;
      const affordable = step + Math.floor((options.maxSeconds - elapsed()) / (elapsed() / step));
      schedule.totalSteps = Math.max(step + 1, Math.min(plannedSteps, affordable));
      schedule.warmupSteps = warmupFor(schedule.totalSteps);
    };
    try {
      for (let epoch = 0; epoch < options.epochs && !outOfTime(); epoch++) {
        for await (const batch of source.batches()) {
          const forward = await adapterForward(params, options.config, batch, engine);
          const { loss: value, gradient } = await draftLoss(
            head,
            forward.output,
            batch.target,
            batch.targetTokens,
            loss,
            engine,
            true,
          );
          const grads = await adapterBackward(params, options.config, forward, gradient!, engine);
          const lr = learningRate(step, schedule);
          const gradNorm = optimizer.step(grads, lr);
          if (!Number.isFinite(value.total) || !Number.isFinite(gradNorm)) {
            throw new HatError(
              'BAD_OPTION',
              `training diverged at step ${step} (loss ${value.total})`,
              'lower the learning rate (--lr)',
            );
          }
          latest = {
            step,
            lr,
            loss: value.total,
            smoothL1: value.smoothL1,
            crossEntropy: value.crossEntropy,
            top1Agreement: value.top1Agreement,
            gradNorm,
          };
          if (step % Math.max(1, Math.floor(schedule.totalSteps / 200)) === 0) history.push(latest);
          step++;
          tokens += batch.batch * batch.seq;
          refitSchedule();
          progress.update(
            `epoch ${epoch + 1}/${options.epochs} step ${step}/${schedule.totalSteps} loss ${value.total.toFixed(4)} ` +
              `(L1 ${value.smoothL1.toFixed(4)}, CE ${value.crossEntropy.toFixed(3)}, ` +
              `top-1 ${(value.top1Agreement * 100).toFixed(1)}%)`,
            step / schedule.totalSteps,
          );
          if (outOfTime()) break;
        }
      }
    } catch (error) {
      progress.fail();
      throw error;
    }
    // The last step always closes the history, whichever limit ended the loop.
    if (latest && history.at(-1) !== latest) history.push(latest);
    const seconds = (Date.now() - started) / 1000;
    progress.succeed(
      `trained the attention adapter: ${step} steps, ${tokens.toLocaleString('en')} tokens in ${seconds.toFixed(1)} s`,
    );
    const validationAfter = options.validation
      ? await evaluateAdapter(params, options.config, options.validation, head, loss, engine)
      : undefined;
    return {
      params,
      config: options.config,
      parameters: parameterCount(options.config),
      steps: step,
      tokens,
      seconds,
      tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
      history,
      validationBefore,
      validationAfter,
    };
  } finally {
    if (!options.engine) await engine.release();
  }
}
