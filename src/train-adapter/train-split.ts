/**
 * `hat train-adapter <split-dir>` core: train the draft adapter on the split's own parts, evaluate the small
 * model against the full one on held-out text, pick the draft threshold, export adapter.onnx and record it in
 * manifest.json. Text comes from a corpus file or is written by the full model itself (self-distillation).
 */
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { HatError } from '../errors.ts';
import { writeFileWhole } from '../file-checks.ts';
import type { Reporter } from '../reporter.ts';
import type { SplitManifest } from '../split/manifest.ts';
import { readModelConfig } from '../runtime/model-config.ts';
import { readManifest, splitTokenizer } from '../runtime/split-dir.ts';
import { lastRow } from '../runtime/part-runner.ts';
import {
  adapterForward,
  parameterCount,
  type AdapterParams,
  type AttentionAdapterConfig,
} from './attention-adapter.ts';
import { simulateRounds, sweepThresholds, top1Agreement, type CostModel, type DraftTrace } from './draft-eval.ts';
import { exportAdapter } from './export-onnx.ts';
import { fitLinearAdapter, linearForward } from './linear-adapter.ts';
import { adapterManifest } from './manifest-entry.ts';
import { createOrtMatMul } from './matmul-ort.ts';
import { topTokens } from './output-head.ts';
import { bufferedSource, type PairBatch } from './pair-source.ts';
import { probeOutputHead } from './probe-head.ts';
import { continueWithFullModel, corpusTokens, HELD_OUT_EVERY, windowHidden } from './split-data.ts';
import { ComposedModel, type SplitRunners } from '../runtime/composed-model.ts';
import { tokenPairSource } from './token-pair-source.ts';
import { layerAttentionWeights, savedAdapterWeights } from './layer-weights.ts';
import { trainAttentionAdapter } from './train-attention.ts';

export interface TrainSplitOptions {
  splitDir: string;
  corpus?: string;
  /** Tokens of self-generated training text (used when no corpus is given). */
  selfGenerate: number;
  kind: 'attention' | 'linear';
  epochs: number;
  lr: number;
  seq: number;
  batch: number;
  /** Most training tokens read from the corpus per pass. */
  maxTokens: number;
  /** Training time budget, seconds. */
  maxSeconds: number;
  ceWeight: number;
  /**
   * Initialise the attention adapter from the last middle layer ('layer'), randomly, or from the split's own trained
   * adapter ('adapter': training continues from it).
   */
  init: 'layer' | 'random' | 'adapter';
  maxDraft: number;
  /** Held-out evaluation: prompts × greedy continuation tokens. */
  evalPrompts: number;
  evalTokens: number;
  seed: number;
  threads?: number;
  /** Adapters with more weight bytes than this keep them in adapter.onnx.data (default 512 MiB; tests lower it). */
  inlineLimitBytes?: number;
}

export interface EvaluationRow {
  adapter: string;
  top1Agreement: number;
  tokensPerRoundBest: number;
  tokensPerRoundHat: number;
  msPerToken: number;
}

export interface TrainSplitResult {
  manifest: SplitManifest;
  rows: EvaluationRow[];
  threshold: number;
  cost: CostModel;
  sweep: Array<{ threshold: number; tokensPerRound: number; msPerToken: number }>;
  training: { seconds: number; tokens: number; parameters: number; finalLoss?: number };
}

const EVAL_PROMPT_TOKENS = 16;
const PAIR_BUFFER_BYTES = 512 * 1024 * 1024;

function attentionConfig(manifest: SplitManifest, config: Record<string, unknown>): AttentionAdapterConfig {
  const { heads, kvHeads, headDim } = manifest.attention;
  if (!heads || !kvHeads || !headDim) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      "the split does not record the model's attention heads",
      'train a linear adapter (--kind linear)',
    );
  }
  return {
    hidden: manifest.hidden.size,
    heads,
    kvHeads,
    headDim,
    ropeTheta: typeof config.rope_theta === 'number' ? config.rope_theta : 10000,
    normEps: typeof config.rms_norm_eps === 'number' ? config.rms_norm_eps : 1e-5,
  };
}

export async function trainSplitAdapter(options: TrainSplitOptions, reporter: Reporter): Promise<TrainSplitResult> {
  const splitDir = resolve(options.splitDir);
  const manifest = readManifest(splitDir);
  const [firstOutputLayer, outputEnd] = manifest.parts.output.layers;
  // Both kinds fit against the output part as a per-row head (targets, the CE term, the held-out replay).
  if (outputEnd > firstOutputLayer)
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `${splitDir}'s output part holds decoder layers ${firstOutputLayer}–${outputEnd - 1} (--output-layers ` +
        `${outputEnd - firstOutputLayer}); hat train-adapter trains adapters only for an output part of ` +
        'final norm + LM head',
      'split the model again without --output-layers (J = 0) to train an adapter',
    );
  // A corpus needs the tokenizer; self-generated text only needs a start token (random-weight models ship none).
  const hasTokenizer = existsSync(join(splitDir, manifest.tokenizer ?? 'tokenizer.json'));
  if (options.corpus && !hasTokenizer)
    throw new HatError(
      'BAD_MANIFEST',
      `${splitDir} has no tokenizer.json to read --corpus with`,
      'use --self-generate instead',
    );
  const tokenizer = hasTokenizer ? splitTokenizer(splitDir, manifest) : undefined;
  const startToken = [tokenizer?.bosTokenId ?? manifest.model?.bosTokenId ?? 0];
  const config = readModelConfig(splitDir);
  // Read before anything is computed: the adapter this run continues is replaced when it is done.
  const previous =
    options.init === 'adapter' ? await adapterToContinue(splitDir, manifest, options, config) : undefined;
  const session = { threads: options.threads };
  const full = await ComposedModel.open(splitDir, manifest, session);
  let engineToRelease: Awaited<ReturnType<typeof createOrtMatMul>> | undefined;
  try {
    const parts = full.parts;
    const hidden = manifest.hidden.size;
    const vocab = parts.output.session.outputs.find((o) => o.name === 'logits')?.shape.at(-1);
    if (typeof vocab !== 'number')
      throw new HatError('UNSUPPORTED_MODEL', "the output part's vocabulary size is symbolic");
    const head = await probeOutputHead(parts.output, hidden, {
      vocab,
      eps: typeof config.rms_norm_eps === 'number' ? config.rms_norm_eps : undefined,
    });
    const engine = await createOrtMatMul({ threads: options.threads });
    engineToRelease = engine;

    // Training text: the corpus, or the full model's own samples from BOS (self-distillation).
    let texts: () => AsyncIterable<number[]> | Iterable<number[]>;
    let totalTokens: number;
    if (options.corpus) {
      const corpus = options.corpus;
      totalTokens = 0;
      for await (const ids of corpusTokens(corpus, tokenizer!, false, options.maxTokens)) totalTokens += ids.length;
      texts = () => corpusTokens(corpus, tokenizer!, false, options.maxTokens);
    } else {
      const progress = reporter.progress(
        `self-generating ${options.selfGenerate} tokens of training text with the full model`,
      );
      const generated: number[][] = [];
      for (let made = 0, seed = options.seed; made < options.selfGenerate; seed++) {
        const piece = await continueWithFullModel(
          full,
          startToken,
          Math.min(options.seq * 2, options.selfGenerate - made),
          { sample: true, seed },
        );
        generated.push(piece);
        made += piece.length;
        progress.update(
          `self-generating training text: ${made}/${options.selfGenerate} tokens`,
          made / options.selfGenerate,
        );
      }
      progress.succeed(`self-generated ${options.selfGenerate} tokens of training text`);
      texts = () => generated;
      totalTokens = options.selfGenerate;
    }
    const source = bufferedSource(
      tokenPairSource({
        texts,
        totalTokens,
        batch: options.batch,
        seq: options.seq,
        hidden,
        head,
        engine,
        computeHidden: (ids) => windowHidden(parts, ids),
      }),
      PAIR_BUFFER_BYTES,
    );

    // Held-out evaluation text: held-out prompts continued greedily by the full model, so a replay of draft
    // rounds along it is exact.
    const evalProgress = reporter.progress('preparing held-out evaluation text (full-model greedy continuations)');
    // Each text with its prompt's length: a corpus line may be shorter than EVAL_PROMPT_TOKENS.
    const evalTexts: Array<{ ids: number[]; promptTokens: number }> = [];
    const prompts = options.corpus ? corpusTokens(options.corpus, tokenizer!, true) : undefined;
    for (let i = 0; i < options.evalPrompts; i++) {
      let prompt: number[];
      if (prompts) {
        const next = await prompts[Symbol.asyncIterator]().next();
        if (next.done) break;
        prompt = next.value.slice(0, EVAL_PROMPT_TOKENS);
      } else {
        prompt = await continueWithFullModel(full, startToken, EVAL_PROMPT_TOKENS, {
          sample: true,
          seed: 1_000_000 + i,
        });
      }
      const continuation = await continueWithFullModel(full, prompt, options.evalTokens, { sample: false, seed: 0 });
      evalTexts.push({ ids: [...prompt, ...continuation], promptTokens: prompt.length });
      evalProgress.update(`held-out continuations: ${i + 1}/${options.evalPrompts}`, (i + 1) / options.evalPrompts);
    }
    evalProgress.succeed(`held-out evaluation text: ${evalTexts.length} prompts × ${options.evalTokens} greedy tokens`);
    const evalBatches: Array<PairBatch & { promptTokens: number }> = [];
    for (const { ids: text, promptTokens } of evalTexts) {
      const { inputs, targets } = await windowHidden(parts, [text]);
      const { tokens } = await topTokens(head, targets, engine);
      evalBatches.push({
        batch: 1,
        seq: text.length,
        hidden: inputs,
        target: targets,
        targetTokens: tokens,
        positions: Int32Array.from({ length: text.length }, (_, p) => p),
        promptTokens,
      });
    }
    let draftPositions = 0; // what the evaluation covered: every greedy token of every held-out text
    const traces = async (predict: (batch: PairBatch) => Promise<Float32Array>): Promise<DraftTrace[]> => {
      const out: DraftTrace[] = [];
      for (const batch of evalBatches) {
        const { tokens, probabilities } = await topTokens(head, await predict(batch), engine);
        // Only the greedy continuation is an exact replay; the prompt is the user's text.
        // A draft at position p predicts the token after p, compared with the full model's choice there.
        const first = batch.promptTokens - 1;
        out.push({
          draftTokens: tokens.subarray(first, batch.seq - 1),
          draftProbabilities: probabilities.subarray(first, batch.seq - 1),
          targetTokens: batch.targetTokens.subarray(first, batch.seq - 1),
        });
      }
      draftPositions = out.reduce((sum, trace) => sum + trace.draftTokens.length, 0);
      return out;
    };

    // The cost model: one small-model draft step and one verification round, both measured here on these parts.
    const cost = await measureCosts(parts, manifest, hidden, vocab);

    const linear = await fitLinearAdapter(source, { engine }, reporter);
    const attention = attentionConfig(manifest, config);
    let trained: Awaited<ReturnType<typeof trainAttentionAdapter>> | undefined;
    let initialisedFrom = 'random';
    if (options.kind === 'attention') {
      // Start from the last middle layer's own attention when it can be found: it beat random starts in our runs.
      const lastMiddle = manifest.parts.middle.layers[1] - 1;
      const from =
        options.init === 'layer'
          ? await layerAttentionWeights(join(splitDir, manifest.parts.middle.file), lastMiddle)
          : previous?.params;
      if (previous) initialisedFrom = "the split's adapter (training continued)";
      else if (from) initialisedFrom = `layer ${lastMiddle}`;
      else if (options.init === 'layer')
        reporter.warn(
          `layer ${lastMiddle}'s attention weights were not found in the middle part; ` +
            `starting from a random initialisation`,
        );
      trained = await trainAttentionAdapter(
        source,
        head,
        {
          config: attention,
          epochs: options.epochs,
          lr: options.lr,
          maxSeconds: options.maxSeconds,
          init: { seed: options.seed, from },
          engine,
          loss: { ceWeight: options.ceWeight },
        },
        reporter,
      );
    }

    const candidates: Array<[string, DraftTrace[]]> = [
      ['none (output part on h_K)', await traces(async (b) => b.hidden)],
      ['linear (ridge)', await traces((b) => linearForward(linear, b.hidden, engine))],
    ];
    if (trained)
      candidates.push([
        `attention (${parameterCount(attention).toLocaleString('en')} params)`,
        await traces(async (b) => (await adapterForward(trained!.params, attention, b, engine)).output),
      ]);
    const chosen = candidates[candidates.length - 1][1];
    const sweep = sweepThresholds(chosen, cost, [0, 0.2, 0.4, 0.6, 0.8], options.maxDraft);
    const rows: EvaluationRow[] = candidates.map(([name, t]) => {
      const best = simulateRounds(t, sweep.best, options.maxDraft);
      return {
        adapter: name,
        top1Agreement: top1Agreement(t),
        tokensPerRoundBest: best.meanTokensPerRound,
        tokensPerRoundHat: simulateRounds(t, 0.6, options.maxDraft).meanTokensPerRound,
        msPerToken: (best.draftSteps * cost.draftStepMs + best.rounds * cost.verifyMs) / best.committed,
      };
    });

    // Export, then publish the manifest entry.
    const file = 'adapter.onnx';
    const staged = join(splitDir, `.${file}.partial`);
    const exportOptions = {
      outputName: manifest.boundaries.middleToOutput,
      publishedName: file,
      inlineLimitBytes: options.inlineLimitBytes,
    };
    const dataFiles =
      options.kind === 'attention'
        ? await exportAdapter(staged, { kind: 'attention', params: trained!.params, config: attention }, exportOptions)
        : await exportAdapter(staged, { kind: 'linear', adapter: linear }, exportOptions);
    // The model already names its data by the published name (it used to name the staged file, gone after this).
    for (const data of dataFiles) renameSync(`${staged}.data`, join(splitDir, data));
    renameSync(staged, join(splitDir, file));
    const final = rows[rows.length - 1];
    manifest.adapter = adapterManifest({
      kind: options.kind,
      file,
      dataFiles,
      outputName: manifest.boundaries.middleToOutput,
      defaultThreshold: sweep.best,
      config: options.kind === 'attention' ? attention : undefined,
      metrics: {
        heldOut: {
          prompts: evalTexts.length,
          greedyTokens: options.evalTokens,
          draftPositions,
          source: options.corpus ? `every ${HELD_OUT_EVERY}th line of ${options.corpus}` : 'self-generated',
        },
        top1Agreement: final.top1Agreement,
        tokensPerRound: {
          chosenThreshold: final.tokensPerRoundBest,
          hatThreshold0_6: final.tokensPerRoundHat,
          maxDraft: options.maxDraft,
        },
        baselines: rows.slice(0, -1),
        sweep: sweep.rows.map((r) => ({
          threshold: r.threshold,
          tokensPerRound: r.meanTokensPerRound,
          msPerToken: r.msPerToken,
        })),
        cost,
        training: trained
          ? {
              initialisedFrom,
              // The training this one continued, as its manifest recorded it: the adapter's history is kept.
              ...(previous ? { continued: previous.metrics } : {}),
              seconds: trained.seconds,
              tokens: trained.tokens,
              steps: trained.steps,
              epochs: options.epochs,
              lr: options.lr,
              ceWeight: options.ceWeight,
              validationAfter: trained.validationAfter,
            }
          : undefined,
        data: options.corpus
          ? { corpus: options.corpus, tokensPerPass: totalTokens }
          : { selfGenerated: options.selfGenerate },
      },
    });
    writeFileWhole(join(splitDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, 'the manifest');
    return {
      manifest,
      rows,
      threshold: sweep.best,
      cost,
      sweep: sweep.rows.map((r) => ({
        threshold: r.threshold,
        tokensPerRound: r.meanTokensPerRound,
        msPerToken: r.msPerToken,
      })),
      training: trained
        ? {
            seconds: trained.seconds,
            tokens: trained.tokens,
            parameters: parameterCount(attention),
            finalLoss: trained.history.at(-1)?.loss,
          }
        : { seconds: 0, tokens: totalTokens, parameters: hidden * hidden + hidden },
    };
  } catch (error) {
    for (const staged of ['.adapter.onnx.partial', '.adapter.onnx.partial.data'])
      rmSync(join(splitDir, staged), { force: true });
    throw error;
  } finally {
    await engineToRelease?.release();
    await full.release(); // its sessions, on success too: the API may be called again in one process
  }
}

/**
 * The split's trained attention adapter, to continue training from (`--init adapter`): its weights and what its
 * manifest entry recorded of its training and data. Refused unless it is an attention adapter of the shape this run
 * would train.
 */
async function adapterToContinue(
  splitDir: string,
  manifest: SplitManifest,
  options: TrainSplitOptions,
  config: Record<string, unknown>,
): Promise<{ params: AdapterParams; metrics: Record<string, unknown> }> {
  const refuse = (problem: string, hint: string) => new HatError('BAD_OPTION', `--init adapter: ${problem}`, hint);
  if (options.kind !== 'attention')
    throw refuse('only an attention adapter is trained in steps', 'drop --init adapter for --kind linear');
  const saved = manifest.adapter;
  if (!saved) throw refuse(`${splitDir} has no adapter yet`, 'train one first (--init layer, the default)');
  const wanted = attentionConfig(manifest, config);
  const recorded = (saved.attention ?? {}) as Partial<AttentionAdapterConfig>;
  const differs = (Object.keys(wanted) as Array<keyof AttentionAdapterConfig>).filter((k) => recorded[k] !== wanted[k]);
  if (saved.kind !== 'attention' || differs.length > 0)
    throw refuse(
      saved.kind !== 'attention'
        ? `${splitDir}'s adapter is a ${saved.kind} adapter`
        : `${splitDir}'s adapter differs from this split's attention in ${differs.join(', ')}`,
      'train a new one (--init layer, the default)',
    );
  const params = await savedAdapterWeights(join(splitDir, saved.file));
  if (!params)
    throw new HatError(
      'BAD_MANIFEST',
      `${join(splitDir, saved.file)} lacks the weights hat train-adapter writes`,
      'train a new one (--init layer, the default)',
    );
  const { training, data } = saved.metrics as { training?: unknown; data?: unknown };
  return { params, metrics: { training, data } };
}

/**
 * One draft step = input part (1 token) + adapter-sized attention + output part, approximated here by the input
 * and output parts plus a middle-layer-sized share; one verification = the middle part on 1 + 3 tokens plus the
 * output part, plus an emulated Wi-Fi round trip (2 × 3 ms and the upload of 4 fp16 states at 5 MB/s).
 */
async function measureCosts(
  parts: SplitRunners,
  manifest: SplitManifest,
  hidden: number,
  vocab: number,
): Promise<CostModel> {
  const repeat = 20;
  const time = async (run: () => Promise<unknown>) => {
    await run();
    const t = performance.now();
    for (let i = 0; i < repeat; i++) await run();
    return (performance.now() - t) / repeat;
  };
  const context = Array.from({ length: 64 }, (_, i) => (i * 13 + 1) % vocab);
  for (const p of [parts.input, parts.middle, parts.output]) p.truncate(0);
  const h = await parts.input.step({ ids: context }, context.length);
  await parts.middle.step({ hidden: h.data }, context.length);
  const one = lastRow(h).slice();
  const inputMs = await time(async () => {
    parts.input.truncate(context.length);
    await parts.input.step({ ids: [5 % vocab] }, 1);
  });
  const outputMs = await time(async () => {
    await parts.output.step({ hidden: one }, 1);
    parts.output.truncate(0);
  });
  const four = new Float32Array(4 * hidden).fill(0.1);
  const middleMs = await time(async () => {
    parts.middle.truncate(context.length);
    await parts.middle.step({ hidden: four }, 4);
  });
  const layers = manifest.parts.middle.layers[1] - manifest.parts.middle.layers[0];
  const middleStep = await time(async () => {
    parts.middle.truncate(context.length);
    await parts.middle.step({ hidden: one }, 1);
  });
  // The adapter is one attention block: about half a decoder layer.
  const draftStepMs = inputMs + outputMs + (middleStep / Math.max(1, layers)) * 0.5;
  const linkMs = 2 * 3 + ((4 * hidden * 2 + 52) / 5e6) * 1000;
  return {
    draftStepMs: Number(draftStepMs.toFixed(3)),
    verifyMs: Number((middleMs + 4 * outputMs + linkMs).toFixed(3)),
  };
}
