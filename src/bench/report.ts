/** The printed report: header, cli-table3 tables (scenarios, ablation, simulation next to the paper). */
import Table from 'cli-table3';
import type { ScenarioResult } from './metrics.ts';
import type { BenchHeader, BenchReport } from './run-bench.ts';
import { ABLATION_ROWS } from './scenarios.ts';

/** The paper's figures (hat-method.md §11, from a secondary summary of the v1 PDF). */
export const PAPER = {
  ttftAt6: { hat: 384.2, 'u-sarathi': 609.2, 'u-medusa': 644.6, 'u-shape': 646.2 } as Record<string, number>,
  tbtCutAt4: { 'u-sarathi': 31.9, 'u-medusa': 22.5, 'u-shape': 41.3 } as Record<string, number>,
  ablation7B: [
    [655.6, 52.3],
    [384.0, 39.4],
    [655.3, 38.3],
    [384.3, 30.6],
    [384.2, 26.4],
  ],
};

/** Plain borders without a rule between rows, so wide tables stay short in logs and READMEs. */
export const plain = (head: string[]) =>
  new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
export const f = (x: number | null | undefined, digits = 1) =>
  x === null || x === undefined ? '–' : x.toFixed(digits);
const ratio = (r: ScenarioResult, key: string) => f(r.ratioToUShape?.[key], 2);

export function headerLines(report: { header: BenchHeader }): string[] {
  const h = report.header;
  return [
    `# hat bench — ${h.date}`,
    `machine: ${h.machine}`,
    `model:   ${h.model}`,
    `split:   ${h.split}`,
    `link:    ${h.link}`,
    `load:    ${h.load}`,
    `prompts: ${h.prompts}`,
  ];
}

export function scenarioTable(results: readonly ScenarioResult[], sloTtftMs: number): string {
  const t = plain([
    'scenario',
    'TTFT ms mean',
    'p50',
    'p90',
    'p99',
    '× u-shape',
    'TBT ms mean',
    'p50',
    'p90',
    'p99',
    '× u-shape',
    'tok/round',
    'B up/tok',
    'B down/tok',
    'server tok/s',
    `SLO ≤${sloTtftMs} ms`,
  ]);
  for (const r of results) {
    t.push([
      r.name,
      f(r.ttftMs?.mean),
      f(r.ttftMs?.p50),
      f(r.ttftMs?.p90),
      f(r.ttftMs?.p99),
      ratio(r, 'ttftMean'),
      f(r.tbtMs?.mean, 2),
      f(r.tbtMs?.p50, 2),
      f(r.tbtMs?.p90, 2),
      f(r.tbtMs?.p99, 2),
      ratio(r, 'tbtMean'),
      f(r.tokensPerRound, 2),
      f(r.bytesUpPerToken, 0),
      f(r.bytesDownPerToken, 0),
      f(r.serverTokensPerSecond),
      `${(r.sloAttainment * 100).toFixed(0)} %`,
    ]);
  }
  return t.toString();
}

export function ablationTable(results: readonly ScenarioResult[]): string {
  const t = plain(['configuration', 'scenario', 'TTFT ms', 'TBT ms', 'paper 7B TTFT / TBT ms']);
  ABLATION_ROWS.forEach(({ row, scenario }, i) => {
    const r = results.find((x) => x.name === scenario);
    t.push([
      row,
      scenario,
      r ? f(r.ttftMs?.mean) : 'not run',
      r ? f(r.tbtMs?.mean, 2) : 'not run',
      `${PAPER.ablation7B[i][0]} / ${PAPER.ablation7B[i][1]}`,
    ]);
  });
  return t.toString();
}

export function simulationTable(report: BenchReport): string {
  const sim = report.simulation!;
  const at = (scenario: string, rate: number) => sim.results.find((r) => r.scenario === scenario && r.rate === rate);
  const t = plain([
    'SIMULATION',
    'TTFT ms @4',
    'TTFT ms @6',
    'TTFT × u-shape @6',
    'TBT ms @4',
    'TBT cut by HAT @4',
    'cloud busy @6',
    'paper TTFT ms @6',
    'paper TBT cut by HAT @4',
  ]);
  const paperName: Record<string, string> = {
    hat: 'hat',
    'u-sarathi': 'u-sarathi',
    'u-spec': 'u-medusa',
    'u-shape': 'u-shape',
  };
  const hat4 = at('hat', 4);
  for (const scenario of ['hat', 'u-sarathi', 'u-spec', 'u-shape', 'chunk-only']) {
    const r4 = at(scenario, 4),
      r6 = at(scenario, 6),
      base6 = at('u-shape', 6);
    const cut =
      r4 && hat4 && scenario !== 'hat' ? `${((1 - hat4.tbtMs.mean / r4.tbtMs.mean) * 100).toFixed(1)} %` : '–';
    const name = paperName[scenario];
    t.push([
      scenario === 'u-spec' ? 'u-spec (≈ U-Medusa)' : scenario,
      f(r4?.ttftMs.mean),
      f(r6?.ttftMs.mean),
      r6 && base6 ? (r6.ttftMs.mean / base6.ttftMs.mean).toFixed(2) : '–',
      f(r4?.tbtMs.mean, 2),
      cut,
      r6 ? `${(r6.cloudBusyShare * 100).toFixed(0)} %` : '–',
      name ? f(PAPER.ttftAt6[name]) : '–',
      name && PAPER.tbtCutAt4[name] ? `${PAPER.tbtCutAt4[name]} %` : '–',
    ]);
  }
  return t.toString();
}

/** The whole printed report. */
export function renderReport(report: BenchReport, sloTtftMs: number): string {
  const lines = [...headerLines(report), ''];
  for (const note of report.notes) lines.push(`NOTE: ${note}`);
  if (report.notes.length) lines.push('');
  lines.push(
    'Measured (real processes on this machine; link EMULATED):',
    scenarioTable(report.scenarios, sloTtftMs),
    '',
    'HAT ablation (paper §11 rows; measured here):',
    ablationTable(report.scenarios),
  );
  if (report.simulation) {
    lines.push('', '=== SIMULATION (discrete-event model fed with the costs measured above; NOT a measurement) ===');
    for (const a of report.simulation.assumptions) lines.push(`- ${a}`);
    if (report.simulation.results.some((r) => r.cloudBusyShare > 0.95))
      lines.push(
        'NOTE: the simulated cloud is saturated (busy > 95 %): ' +
          "this model's measured g(X) cannot serve HAT's load, " +
          'so queueing dominates and the rows say little about HAT.',
      );
    lines.push(
      simulationTable(report),
      'paper: SpecBench, Vicuna-7B, 30 Jetson devices, 8×A6000 cloud (hat-method.md §11); ' +
        'U-Medusa is the closest paper baseline to u-spec.',
    );
  }
  return lines.join('\n');
}
