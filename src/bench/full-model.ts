/**
 * The unsplit model for the cloud-only and device-only baselines: the split's parts composed in one process
 * (src/runtime/composed-model.ts), decoded greedily for exactly `maxNewTokens` (a stop token is not special here).
 */
import type { ComposedModel } from '../runtime/composed-model.ts';
import { generateTokens } from '../runtime/generate.ts';
import { argmax } from '../runtime/sampling.ts';

export async function generateGreedy(
  model: ComposedModel,
  prompt: readonly number[],
  maxNewTokens: number,
  onToken: (id: number) => void,
): Promise<void> {
  await generateTokens(model, prompt, { maxNewTokens, sampler: argmax, onToken });
}
