/**
 * Where `hat train-adapter` gets its text and hidden states: a corpus file streamed line by line (every 20th line
 * held out), or text the full model writes itself; h_K and h_N come from running windows through the split's
 * own input and middle parts, one window at a time, so memory holds one batch whatever the corpus size.
 */
import { assertReadableFile } from '../file-checks.ts';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ComposedModel, SplitRunners } from '../runtime/composed-model.ts';
import { generateTokens } from '../runtime/generate.ts';
import { makeSampler } from '../runtime/sampling.ts';
import type { TextTokenizer } from '../runtime/tokenizer.ts';

export const HELD_OUT_EVERY = 20;

/** Token lines of a corpus: training lines, or held-out lines (every 20th). Streamed; nothing is kept. */
export async function* corpusTokens(
  file: string,
  tokenizer: TextTokenizer,
  heldOut: boolean,
  maxTokens = Infinity,
): AsyncIterable<number[]> {
  assertReadableFile(file, `--corpus ${file}`, 'pass a UTF-8 text file');
  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  let index = 0,
    produced = 0;
  for await (const line of lines) {
    const held = index++ % HELD_OUT_EVERY === 0;
    if (held !== heldOut || line.trim() === '') continue;
    const ids = tokenizer.encode(`${line}\n`, false);
    produced += ids.length;
    yield ids;
    if (produced >= maxTokens) return;
  }
}

/** h_K and h_N of each window, concatenated: [windows·seq, hidden] each. */
export async function windowHidden(
  parts: SplitRunners,
  windows: number[][],
): Promise<{ inputs: Float32Array; targets: Float32Array }> {
  const seq = windows[0].length;
  const inputs: Float32Array[] = [];
  const targets: Float32Array[] = [];
  for (const ids of windows) {
    parts.input.truncate(0);
    parts.middle.truncate(0);
    const hK = await parts.input.step({ ids }, seq);
    const hN = await parts.middle.step({ hidden: hK.data }, seq);
    inputs.push(hK.data);
    targets.push(hN.data);
  }
  const join = (rows: Float32Array[]) => {
    const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
    let offset = 0;
    for (const r of rows) {
      out.set(r, offset);
      offset += r.length;
    }
    return out;
  };
  return { inputs: join(inputs), targets: join(targets) };
}

/** The full model continuing `prompt` from an empty cache: sampled at temperature 1, or greedy. */
export async function continueWithFullModel(
  model: ComposedModel,
  prompt: readonly number[],
  tokens: number,
  options: { sample: boolean; seed: number },
): Promise<number[]> {
  const sampler = makeSampler({ temperature: options.sample ? 1 : 0, topP: 1, seed: options.seed });
  return (await generateTokens(model, prompt, { maxNewTokens: tokens, sampler })).ids;
}
