/** SVG charts of a bench run, specified in vega-lite and rendered headless by vega (no browser, no canvas). */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ScenarioResult } from './metrics.ts';

export async function render(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const PERCENTILES = ['mean', 'p50', 'p90', 'p99'] as const;

/** Grouped bars: one group per scenario, one bar per statistic. */
function latencySpec(results: readonly ScenarioResult[], field: 'ttftMs' | 'tbtMs', title: string): TopLevelSpec {
  const values = results.flatMap((r) => {
    const summary = r[field];
    return summary ? PERCENTILES.map((stat) => ({ scenario: r.name, stat, ms: summary[stat] })) : [];
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: { step: 14 },
    height: 220,
    data: { values },
    mark: 'bar',
    encoding: {
      x: {
        field: 'scenario',
        type: 'nominal',
        sort: results.map((r) => r.name),
        title: null,
        axis: { labelAngle: -30 },
      },
      xOffset: { field: 'stat', sort: [...PERCENTILES] },
      y: { field: 'ms', type: 'quantitative', title: 'ms' },
      color: { field: 'stat', type: 'nominal', sort: [...PERCENTILES], title: null },
    },
  } as TopLevelSpec;
}

function ttftByLengthSpec(results: readonly ScenarioResult[], title: string): TopLevelSpec {
  const values = results.flatMap((r) =>
    r.byPromptLength.map((p) => ({ scenario: r.name, promptTokens: p.promptTokens, ttftMs: p.ttftMs })),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 360,
    height: 220,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'promptTokens', type: 'quantitative', title: 'prompt tokens' },
      y: { field: 'ttftMs', type: 'quantitative', title: 'mean TTFT (ms)' },
      color: { field: 'scenario', type: 'nominal', sort: results.map((r) => r.name) },
    },
  } as TopLevelSpec;
}

/** File name → SVG text. `subtitle` names the model and link (EMULATED) on every chart. */
export async function renderCharts(
  results: readonly ScenarioResult[],
  subtitle: string,
): Promise<Record<string, string>> {
  const title = (text: string) => ({ text, subtitle, subtitleFontSize: 9 }) as unknown as string;
  return {
    'ttft-by-scenario.svg': await render(latencySpec(results, 'ttftMs', title('Time to first token by scenario'))),
    'tbt-by-scenario.svg': await render(latencySpec(results, 'tbtMs', title('Time between tokens by scenario'))),
    'ttft-vs-prompt-length.svg': await render(ttftByLengthSpec(results, title('TTFT vs prompt length'))),
  };
}
