/**
 * The configurations `hat bench` compares, all on the same split and prompts: HAT, its baselines (U-shape,
 * U-Sarathi, U-Spec ≈ the paper's U-Medusa, cloud-only, device-only) and the ablation rows of the paper's table.
 */
import { HatError } from '../errors.ts';

/** How a scenario runs a request: through the split, with the full model in the cloud, or on the device alone. */
export type ScenarioKind = 'split' | 'cloud-only' | 'device-only';

export interface Scenario {
  name: string;
  description: string;
  kind: ScenarioKind;
  /** For split scenarios: the HatGenerator options. */
  speculative: boolean;
  parallelDrafting: boolean;
  chunk: 'auto' | 'off' | number;
}

const split = (
  name: string,
  description: string,
  speculative: boolean,
  parallelDrafting: boolean,
  chunk: Scenario['chunk'],
): Scenario => ({ name, description, kind: 'split', speculative, parallelDrafting, chunk });

/** Every scenario, in table order; u-sarathi's fixed chunk size is set by `--sarathi-chunk`. */
export function allScenarios(sarathiChunk: number): Scenario[] {
  return [
    split('hat', 'HAT: chunk auto + speculative + parallel drafting', true, true, 'auto'),
    split('u-shape', 'U-shape: no drafts, whole prompt in one frame', false, false, 'off'),
    split('u-sarathi', `U-Sarathi: no drafts, fixed ${sarathiChunk}-token prompt chunks`, false, false, sarathiChunk),
    split('u-spec', 'U-Spec (≈ U-Medusa): speculative, no chunking, no parallel drafting', true, false, 'off'),
    split('chunk-only', 'ablation: U-shape + chunk auto', false, false, 'auto'),
    split('chunk-spec', 'ablation: chunk auto + speculative, no parallel drafting', true, false, 'auto'),
    {
      name: 'cloud-only',
      description: 'full model in the cloud, prompt sent as text, tokens streamed back',
      kind: 'cloud-only',
      speculative: false,
      parallelDrafting: false,
      chunk: 'off',
    },
    {
      name: 'device-only',
      description: 'full model on the device, no network',
      kind: 'device-only',
      speculative: false,
      parallelDrafting: false,
      chunk: 'off',
    },
  ];
}

export const BASELINE = 'u-shape';

/** HAT's ablation table (paper §11): each row names the scenario that measures it. */
export const ABLATION_ROWS: ReadonlyArray<{ row: string; scenario: string }> = [
  { row: 'U-shape (base)', scenario: 'u-shape' },
  { row: '+ prompt chunking', scenario: 'chunk-only' },
  { row: '+ speculative decoding', scenario: 'u-spec' },
  { row: '+ chunking + speculative', scenario: 'chunk-spec' },
  { row: '+ parallel drafting (HAT)', scenario: 'hat' },
];

/** `--scenarios a,b,…` (or all); u-shape is always added, every ratio is taken to it. */
export function selectScenarios(list: string | undefined, sarathiChunk: number): Scenario[] {
  const all = allScenarios(sarathiChunk);
  if (!list) return all;
  const names = new Set(
    list
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
  for (const name of names) {
    if (!all.some((s) => s.name === name)) {
      throw new HatError(
        'BAD_OPTION',
        `--scenarios: unknown scenario "${name}"`,
        `choose from ${all.map((s) => s.name).join(', ')}`,
      );
    }
  }
  names.add(BASELINE);
  return all.filter((s) => names.has(s.name));
}
