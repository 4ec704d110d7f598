/** `hat bench`: run, render, write. The command prints what this returns. */
import type { Reporter } from '../reporter.ts';
import { renderCharts } from './charts.ts';
import { writeOutDir } from './output.ts';
import { renderReport } from './report.ts';
import { runBench, type BenchOptions, type BenchReport } from './run-bench.ts';

export { checkOutDir } from './output.ts';
export { selectScenarios } from './scenarios.ts';
export type { BenchOptions, BenchReport } from './run-bench.ts';

/** results.json: one entry per scenario keyed by its name, plus the header, notes and the simulation. */
export function resultsJson(report: BenchReport, options: BenchOptions): string {
  return `${JSON.stringify(
    {
      header: report.header,
      notes: report.notes,
      options: { ...options, link: report.header.link, scenarios: options.scenarios.map((s) => s.name) },
      scenarios: Object.fromEntries(report.scenarios.map((r) => [r.name, r])),
      simulation: report.simulation ? { label: 'SIMULATION (not a measurement)', ...report.simulation } : undefined,
    },
    null,
    2,
  )}\n`;
}

export async function benchToDir(
  options: BenchOptions,
  out: string,
  reporter: Reporter,
): Promise<{ report: BenchReport; text: string; json: string }> {
  const report = await runBench(options, reporter);
  const text = renderReport(report, options.sloTtftMs);
  const charts = await renderCharts(
    report.scenarios,
    `${report.header.model.split(':')[0]} — ${report.header.link.split(' (')[0]} — ${report.header.date.slice(0, 10)}`,
  );
  const json = resultsJson(report, options);
  await writeOutDir(out, { 'results.json': json, 'report.txt': `${text}\n`, ...charts });
  return { report, text, json };
}
