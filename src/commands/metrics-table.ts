/** The device metrics table run-device and demo print (cli-table3; plain borders when not on a terminal). */
import Table from 'cli-table3';
import type { DeviceMetrics } from '../runtime/device/hat-generator.ts';

export function table(head: string[]): Table.Table {
  const colour = Boolean(process.stderr.isTTY);
  return new Table({ head, style: { head: colour ? ['cyan'] : [], border: colour ? ['grey'] : [] } });
}

export function deviceMetricsTable(m: DeviceMetrics): string {
  const t = table([
    'TTFT ms',
    'TBT ms mean',
    'TBT ms p90',
    'rounds',
    'tokens/round',
    'parallel-draft hits',
    'cloud-advised rounds',
    'KB up',
    'KB down',
    'chunks',
    'η',
  ]);
  t.push([
    m.ttftMs.toFixed(1),
    m.tbtMs.mean.toFixed(2),
    m.tbtMs.p90.toFixed(2),
    m.rounds,
    m.tokensPerRound,
    `${m.parallelDrafting.hits}/${m.parallelDrafting.branches}`,
    m.advisedRounds,
    (m.bytesUp / 1024).toFixed(1),
    (m.bytesDown / 1024).toFixed(1),
    m.chunkSizes.join('+'),
    `${m.draft.mode} ${m.draft.threshold}`,
  ]);
  return t.toString();
}
