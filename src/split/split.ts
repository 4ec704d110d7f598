/**
 * `hat split` core: recognise the decoder, plan the three parts, check privacy, write parts + weights +
 * tokenizer files + manifest into a staging directory, verify the composed parts against the model, and only
 * then publish the directory under --out.
 */
import { copyFileSync, existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { HatError } from '../errors.ts';
import { checkExternalData, loadModel, onnx, saveModel, type LoadedModel } from '../onnx/model-io.ts';
import type { Progress, Reporter } from '../reporter.ts';
import { analyzeDecoder, type DecoderStructure } from './decoder.ts';
import { buildManifest } from './build-manifest.ts';
import type { SplitManifest } from './manifest.ts';
import { hiddenDType } from './model-facts.ts';
import { checkedMaskRepair, type MaskRepair } from './mask-repair.ts';
import { assertOutputTarget, createStaging, type Staging } from './output-dir.ts';
import { checkLayerCounts, PART_NAMES, planParts, type PartGraph, type PartName } from './parts.ts';
import { checkPrivacy } from './privacy.ts';
import { probeMultiTokenStep, verifySplit, type VerifyReport } from './verify.ts';
import { writePartWeights, type PartWeights, type WeightsMode } from './weights.ts';

export const DEFAULT_INPUT_LAYERS = 2; // HAT's Vicuna-7B setting
const COMPANION_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'config.json',
  'generation_config.json',
];

export interface SplitOptions {
  model: string;
  out: string;
  inputLayers?: number;
  outputLayers?: number;
  weights?: WeightsMode;
  /** Run the composed-equivalence check before publishing (default true). */
  verify?: boolean;
  /** Replace a non-empty --out. */
  force?: boolean;
  /** Rebuild a traced attention mask that breaks multi-token cached steps (default true; needs verify). */
  repairMask?: boolean;
  /** Structural-check tolerance overrides (max|composed − full| ≤ atol + rtol·max|full|); dtype defaults otherwise. */
  atol?: number;
  rtol?: number;
}

export interface SplitResult {
  dir: string;
  manifest: SplitManifest;
  verification?: VerifyReport;
}

export function chooseLayerCounts(
  layers: number,
  inputLayers: number | undefined,
  outputLayers: number | undefined,
): [number, number] {
  const output = outputLayers ?? 0;
  const input = inputLayers ?? Math.max(0, Math.min(DEFAULT_INPUT_LAYERS, layers - 1 - output));
  checkLayerCounts(layers, input, output);
  return [input, output];
}

async function writePart(
  part: PartGraph,
  source: LoadedModel,
  mode: WeightsMode,
  dir: string,
  linked: Set<string>,
): Promise<PartWeights> {
  const weights = writePartWeights(part.name, part.initializers, source, mode, dir, linked);
  const model = source.model;
  await saveModel(
    onnx.ModelProto.create({
      irVersion: model.irVersion,
      opsetImport: model.opsetImport,
      producerName: 'hat split',
      producerVersion: '0.1.0',
      domain: model.domain,
      modelVersion: model.modelVersion,
      docString: `${part.name} part of ${basename(source.path)}, layers [${part.layers[0]}, ${part.layers[1]})`,
      graph: { ...part.graph, initializer: weights.initializers },
      functions: model.functions,
      metadataProps: model.metadataProps,
    }),
    join(dir, `${part.name}.onnx`),
  );
  return weights;
}

/** Runs a step under a progress line that always ends, in success or failure. */
async function withProgress<T>(
  reporter: Reporter,
  text: string,
  step: (progress: Progress) => Promise<T>,
  done?: (result: T) => string,
): Promise<T> {
  const progress = reporter.progress(text);
  try {
    const result = await step(progress);
    progress.succeed(done ? done(result) : typeof result === 'string' ? result : undefined);
    return result;
  } catch (error) {
    progress.fail();
    throw error;
  }
}

interface SplitContext {
  options: SplitOptions;
  mode: WeightsMode;
  source: LoadedModel;
  dataFiles: Map<string, number>;
  structure: DecoderStructure;
  layerCounts: [number, number];
  reporter: Reporter;
}

interface StagedSplit {
  staging: Staging;
  manifest: SplitManifest;
  verification?: VerifyReport;
}

export async function splitModel(options: SplitOptions, reporter: Reporter): Promise<SplitResult> {
  assertOutputTarget(options.out, options.force ?? false, [options.model]);
  const source = await loadModel(options.model);
  const dataFiles = checkExternalData(source);
  const structure = analyzeDecoder(source.model);
  const layerCount = structure.layers.length;
  const layerCounts = chooseLayerCounts(layerCount, options.inputLayers, options.outputLayers);
  if (options.inputLayers === undefined && layerCounts[0] < DEFAULT_INPUT_LAYERS) {
    reporter.info(
      `the model has ${layerCount} layers: the input part gets ${layerCounts[0]} so the middle keeps at least one`,
    );
  }
  const context: SplitContext = {
    options,
    mode: options.weights ?? 'copy',
    source,
    dataFiles,
    structure,
    layerCounts,
    reporter,
  };

  const repair =
    (options.verify ?? true) && options.repairMask !== false ? await maskRepairIfNeeded(context) : undefined;
  if (repair) {
    // The repair is an improvement, never a reason to refuse: if its parts fail any case, the model's own mask stays.
    let failure = 'did not reproduce token-by-token steps';
    try {
      const repaired = await stageSplit(context, repair);
      if (repaired.verification?.multiTokenCachedSteps) return publish(repaired);
      await repaired.staging.discard();
    } catch (error) {
      if (!(error instanceof HatError) || error.code !== 'BAD_SPLIT') throw error;
      failure = `failed verification (${error.message})`;
    }
    reporter.warn(`the repaired attention mask ${failure}: keeping the model's own mask`);
  }
  return publish(await stageSplit(context));
}

async function publish(staged: StagedSplit): Promise<SplitResult> {
  await staged.staging.publish();
  return { dir: staged.staging.target, manifest: staged.manifest, verification: staged.verification };
}

/** A repair for the traced mask, when the model has one and fails a multi-token step on a non-empty cache. */
async function maskRepairIfNeeded({
  source,
  structure,
  reporter,
  options,
}: SplitContext): Promise<MaskRepair | undefined> {
  const { repair, reason } = await checkedMaskRepair(source, structure);
  const kvOnly = {
    kv: { input: structure.layers, middle: [], output: [] },
    hidden: { size: structure.hiddenSize, dtype: hiddenDType(structure.boundaries[0].dataType) },
  };
  const probe = await probeMultiTokenStep(source.path, kvOnly, structure.embedding.vocabSize, options);
  if (probe.status === 'passed') return undefined;
  const failure =
    `the model fails a multi-token step on a non-empty cache ` + `(${probe.detail?.split('\n')[0] ?? probe.status})`;
  if (!repair) {
    reporter.info(`${failure}; its attention mask is kept: ${reason}`);
    return undefined;
  }
  const window = repair.window ? ` with its ${repair.window}-position sliding window` : '';
  reporter.info(`${failure}: rebuilding its attention mask ${repair.tensor}${window} in the parts`);
  return repair;
}

/** Plans, checks, writes and verifies one split in a staging folder; the caller publishes or discards it. */
async function stageSplit(context: SplitContext, repair?: MaskRepair): Promise<StagedSplit> {
  const { options, mode, source, structure, reporter } = context;
  const plan = planParts(source.model, structure, ...context.layerCounts, repair);
  if (plan.groupedMatMuls > 0) {
    reporter.info(
      `grouped-query attention: ${plan.groupedMatMuls} attention MatMuls read the cache as it is ` +
        `(the export widened it to every query head on every run)`,
    );
  }
  const privacy = checkPrivacy([plan.parts.middle, plan.parts.output]);
  if (!privacy.passed) {
    throw new HatError(
      'BAD_SPLIT',
      `privacy check failed: ${privacy.checks.find((c) => c.startsWith('FAIL'))}`,
      'this graph feeds token values past the input part; it cannot be split safely',
    );
  }
  const staging = await createStaging(options.out, options.force ?? false, [source.path]);
  try {
    const linked = new Set<string>();
    const written = {} as Record<PartName, PartWeights>;
    await withProgress(reporter, `writing parts (${mode} weights)`, async (progress) => {
      for (const [i, name] of PART_NAMES.entries()) {
        progress.update(`writing ${name}.onnx`, i / PART_NAMES.length);
        written[name] = await writePart(plan.parts[name], source, mode, staging.dir, linked);
      }
      return `wrote input.onnx, middle.onnx, output.onnx (${mode} weights)`;
    });
    const companions = COMPANION_FILES.filter((file) => existsSync(join(source.dir, file)));
    for (const file of companions) copyFileSync(join(source.dir, file), join(staging.dir, file));
    const manifest = await buildManifest({
      ...context,
      inputLayers: context.layerCounts[0],
      plan,
      written,
      privacy,
      companions,
      repair,
    });

    let verification: VerifyReport | undefined;
    if (options.verify ?? true) {
      verification = await withProgress(
        reporter,
        'checking that the composed parts reproduce the model',
        async () => {
          const report = await verifySplit(source.path, staging.dir, manifest, options);
          const failed = report.cases.find((c) => c.status === 'failed');
          if (failed) {
            const { atol, rtol } = report.tolerance;
            throw new HatError(
              'BAD_SPLIT',
              `the composed parts differ from the model with graph optimizations off: ${failed.name}: max abs error ` +
                `${failed.maxAbsError?.toExponential(2)} at ${failed.worst} ` +
                `(tolerance atol ${atol} + rtol ${rtol}·max|value|)`,
              'please report this model; --no-verify writes the split anyway',
            );
          }
          return report;
        },
        (report) =>
          `composed parts reproduce the model (${report.cases.map((c) => `${c.name}: ${c.status}`).join('; ')})`,
      );
      manifest.multiTokenCachedSteps = verification.multiTokenCachedSteps;
      if (!verification.multiTokenCachedSteps && manifest.batching?.mode !== 'none') {
        // A padded batch is a multi-token step over a (padded) past: parts that fail one must not be batched.
        manifest.batching = { mode: 'none', reason: 'the parts fail a multi-token step on a non-empty cache' };
      }
      const { serving } = verification;
      manifest.verification = {
        passed: verification.passed,
        tolerance: verification.tolerance,
        cases: verification.cases.map(({ name, status, maxAbsError, maxRelError, detail }) => ({
          name,
          status,
          maxAbsError,
          maxRelError,
          detail: detail?.split('\n')[0],
        })),
        ...(serving && {
          serving: {
            optimization: serving.optimization,
            maxAbsError: serving.maxAbsError,
            maxRelError: serving.maxRelError,
            worst: serving.worst,
            argmaxChanges: serving.argmaxChanges,
            withinTolerance: serving.withinTolerance,
          },
        }),
      };
      if (serving && (!serving.withinTolerance || serving.argmaxChanges > 0)) {
        reporter.warn(
          `with graph optimizations on (as run-device and serve-cloud run) the parts deviate from the model by up ` +
            `to ${serving.maxAbsError.toExponential(2)} (relative ${serving.maxRelError.toExponential(2)}) ` +
            `at ${serving.worst}; ` +
            `${serving.argmaxChanges} greedy choice(s) changed over the probe steps ` +
            `— recorded in manifest.verification.serving`,
        );
      }
    }
    await writeFile(join(staging.dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    return { staging, manifest, verification };
  } catch (error) {
    await staging.discard();
    throw error;
  }
}
