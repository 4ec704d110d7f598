/** `hat bench --fleet`: run, render, write (results.json, report.txt, charts, the recordings). */
import type { Reporter } from '../../reporter.ts';
import { writeOutDir } from '../output.ts';
import { recordingToJson } from '../../runtime/device/session-recorder.ts';
import { fleetResultsJson, renderFleetCharts, renderFleetReport } from './fleet-report.ts';
import { recordingFileNames } from './record-sessions.ts';
import { runFleet, type FleetOptions, type FleetReport } from './run-fleet.ts';

export type { FleetOptions, FleetReport } from './run-fleet.ts';
export type { LoadShape } from './load.ts';

export async function fleetToDir(
  options: FleetOptions,
  out: string,
  reporter: Reporter,
): Promise<{ report: FleetReport; text: string; json: string; files: string[] }> {
  const report = await runFleet(options, reporter);
  const text = renderFleetReport(report);
  const charts = await renderFleetCharts(report);
  const names = recordingFileNames(report.recorded);
  const recordings = Object.fromEntries(report.recorded.map((r, i) => [names[i], recordingToJson(r)]));
  const json = fleetResultsJson(report, options);
  const files = {
    'results.json': json,
    'report.txt': `${text}\n`,
    ...charts,
    ...recordings,
  };
  await writeOutDir(out, files);
  const written = Object.keys(files).filter((n) => !n.startsWith('recordings/'));
  return { report, text, json, files: names.length ? [...written, 'recordings/'] : written };
}
