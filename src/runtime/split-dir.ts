/**
 * Opening a split directory: read and validate manifest.json, hash the split (device and cloud must agree on
 * it), and open each part as a PartRunner wired by the manifest's boundary and KV names.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { HatError } from '../errors.ts';
import { MANIFEST_FORMAT, type SplitManifest } from '../split/manifest.ts';
import { PartRunner, type PartIO } from './part-runner.ts';
import type { SessionOptions } from './session.ts';
import { configSpecialIds, type SpecialIds } from './prompt.ts';
import { loadTokenizer, type TextTokenizer } from './tokenizer.ts';

export type PartName = 'input' | 'middle' | 'output';

export function readManifest(splitDir: string): SplitManifest {
  const path = join(splitDir, 'manifest.json');
  if (!existsSync(path)) {
    throw new HatError(
      'BAD_MANIFEST',
      `${splitDir} has no manifest.json`,
      'point at a directory written by `hat split`',
    );
  }
  let manifest: SplitManifest;
  try {
    manifest = JSON.parse(readFileSync(path, 'utf8')) as SplitManifest;
  } catch (error) {
    throw new HatError(
      'BAD_MANIFEST',
      `${path} is not valid JSON (${(error as Error).message})`,
      'split the model again',
    );
  }
  if (manifest?.format !== MANIFEST_FORMAT) {
    throw new HatError(
      'BAD_MANIFEST',
      `${path} has format ${JSON.stringify(manifest?.format)}, expected ${MANIFEST_FORMAT}`,
      'split the model again with this version of hat',
    );
  }
  const shape = manifestShape.safeParse(manifest);
  if (!shape.success) {
    const issue = shape.error.issues[0];
    throw new HatError(
      'BAD_MANIFEST',
      `${path} is not a whole split manifest (${issue.path.join('.')}: ${issue.message})`,
      'split the model again',
    );
  }
  return manifest;
}

const tensorSpecs = z.array(z.looseObject({ name: z.string() }));
const part = z.looseObject({
  file: z.string().min(1),
  layers: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
  inputs: tensorSpecs,
  outputs: tensorSpecs,
});
const kvPairs = z.array(
  z.looseObject({
    layer: z.number().int(),
    pastKey: z.string(),
    pastValue: z.string(),
    presentKey: z.string(),
    presentValue: z.string(),
  }),
);
/**
 * The fields every reader of a split relies on, checked once here so that a hand-edited or truncated manifest is a
 * BAD_MANIFEST naming the field rather than a TypeError wherever it is first read. Other fields stay optional.
 */
const manifestShape = z.looseObject({
  source: z.looseObject({ layers: z.number().int().positive() }),
  hidden: z.looseObject({ size: z.number().int().positive(), dtype: z.string() }),
  attention: z.looseObject({}),
  boundaries: z.looseObject({ inputToMiddle: z.string(), middleToOutput: z.string() }),
  parts: z.looseObject({ input: part, middle: part, output: part }),
  kv: z.looseObject({ input: kvPairs, middle: kvPairs, output: kvPairs }),
});

/**
 * Identifies the split itself (source model, cut points, boundary and KV names), not the files' bytes: a
 * device bundle and the cloud's directory hash equal although the device holds no middle part.
 */
export function manifestHash(manifest: SplitManifest): string {
  const identity = {
    format: manifest.format,
    source: manifest.source,
    hidden: manifest.hidden,
    boundaries: manifest.boundaries,
    layers: {
      input: manifest.parts.input.layers,
      middle: manifest.parts.middle.layers,
      output: manifest.parts.output.layers,
    },
    kv: manifest.kv,
  };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex');
}

export function partIO(manifest: SplitManifest, part: PartName): PartIO {
  switch (part) {
    case 'input':
      return { idsInput: 'input_ids', output: manifest.boundaries.inputToMiddle, kv: manifest.kv.input };
    case 'middle':
      return {
        hiddenInput: manifest.boundaries.inputToMiddle,
        output: manifest.boundaries.middleToOutput,
        kv: manifest.kv.middle,
      };
    case 'output':
      return { hiddenInput: manifest.boundaries.middleToOutput, output: 'logits', kv: manifest.kv.output };
  }
}

export async function openPart(
  splitDir: string,
  manifest: SplitManifest,
  part: PartName,
  options: SessionOptions = {},
): Promise<PartRunner> {
  const file = resolve(splitDir, manifest.parts[part].file);
  if (!existsSync(file)) {
    throw new HatError(
      'BAD_MANIFEST',
      `${part} part ${manifest.parts[part].file} is missing from ${splitDir}`,
      part === 'middle'
        ? 'the middle part lives on the cloud: run serve-cloud on the full split directory'
        : 'copy the whole device bundle',
    );
  }
  return PartRunner.open(file, partIO(manifest, part), options, `${part} part`);
}

/**
 * Several things opened together (parts, a full model): all of them, or — when one fails — none, the others'
 * sessions released before the first failure is thrown (a long-lived process would otherwise keep their memory).
 */
export async function openAll<T extends { session: { release(): Promise<void> } }>(
  opens: ReadonlyArray<() => Promise<T>>,
): Promise<T[]> {
  const settled = await Promise.allSettled(opens.map((open) => open()));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (!failed) return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  for (const s of settled) if (s.status === 'fulfilled') await s.value.session.release();
  throw failed.reason;
}

/**
 * The tokenizer a split directory or device bundle carries, with the tokenizer_config.json, config.json and
 * generation_config.json beside it (all copied there by `hat split`).
 */
export function splitTokenizer(splitDir: string, manifest: SplitManifest): TextTokenizer {
  const file = join(splitDir, manifest.tokenizer ?? 'tokenizer.json');
  if (!existsSync(file))
    throw new HatError(
      'BAD_MANIFEST',
      `${splitDir} has no tokenizer.json`,
      'split a model that has tokenizer.json beside it, or copy it into the split directory',
    );
  const beside = (name: string) => (existsSync(join(splitDir, name)) ? join(splitDir, name) : undefined);
  return loadTokenizer({
    tokenizer: file,
    tokenizerConfig: beside('tokenizer_config.json'),
    config: beside('config.json'),
    generationConfig: beside('generation_config.json'),
  });
}

/**
 * The special ids of a split directory or device bundle without its tokenizer: BOS/EOS from the manifest, and every
 * EOS id the generation_config.json and config.json that `hat split` copied there list.
 */
export function splitSpecialIds(splitDir: string, manifest: SplitManifest): SpecialIds {
  return {
    bosTokenId: manifest.model?.bosTokenId,
    eosTokenId: manifest.model?.eosTokenId,
    stopTokenIds: configSpecialIds(splitDir).stopTokenIds,
  };
}
