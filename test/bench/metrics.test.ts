import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregate, withRatios } from '../../src/bench/metrics.ts';
import { scenarioTable } from '../../src/bench/report.ts';
import { tokenGaps, type RequestRecord } from '../../src/bench/record.ts';
import { allScenarios, selectScenarios } from '../../src/bench/scenarios.ts';

const scenario = (name: string) => allScenarios(64).find((s) => s.name === name)!;

function record(overrides: Partial<RequestRecord>): RequestRecord {
  return {
    scenario: 'u-shape',
    promptTokens: 16,
    tokens: 5,
    ttftMs: 100,
    gapsMs: [10, 10, 10, 10],
    rounds: 4,
    bytesUp: 1000,
    bytesDown: 500,
    cloudComputeMs: 20,
    cloudQueueMs: 4,
    prefillDeviceMs: 3,
    prefillBytesUp: 600,
    decodeRowsUp: 4,
    chunkSizes: [16],
    parallelDrafting: { branches: 0, hits: 0 },
    startedAt: 0,
    durationMs: 200,
    waitMs: 0,
    ...overrides,
  };
}

test('token gaps spread each round over the tokens it committed', () => {
  assert.deepEqual(
    tokenGaps([
      { at: 100, count: 1 },
      { at: 130, count: 3 },
      { at: 140, count: 1 },
    ]),
    [10, 10, 10, 10],
  );
  assert.deepEqual(tokenGaps([{ at: 5, count: 1 }]), []);
});

test(
  'aggregate: percentiles over requests (TTFT) and over tokens (TBT), ' +
    'per-token bytes, SLO share, tokens per round',
  () => {
    const records = [
      record({ ttftMs: 100, gapsMs: [10, 10, 10, 10] }),
      record({ ttftMs: 300, gapsMs: [20, 20, 20, 20] }),
      record({ ttftMs: 900, error: 'cloud closed' }),
    ];
    const r = aggregate(scenario('u-shape'), records, { sloTtftMs: 200, devices: 1 });
    assert.equal(r.requests, 2);
    assert.equal(r.failed, 1);
    assert.deepEqual(r.ttftMs, { mean: 200, p50: 100, p90: 300, p99: 300 });
    assert.equal(r.tbtMs?.mean, 15);
    assert.equal(r.tbtMs?.p90, 20);
    assert.equal(r.sloAttainment, 0.333, 'the failed request is a miss');
    assert.equal(r.bytesUpPerToken, 200);
    assert.equal(r.tokensPerRound, 1); // (10 tokens − 2 first tokens) / 8 rounds
    assert.equal(r.serverTokensPerSecond, 16.67); // closed loop: 10 tokens per 600 busy ms (the failed one's too)
    assert.deepEqual(r.byPromptLength, [{ promptTokens: 16, requests: 2, ttftMs: 200, tbtMs: 15 }]);
  },
);

test('open loop throughput is tokens over the wall time; device-only has no server figure', () => {
  const open = aggregate(scenario('hat'), [record({ scenario: 'hat', tokens: 9, rounds: 4 })], {
    sloTtftMs: 500,
    devices: 4,
    wallMs: 3000,
  });
  assert.equal(open.serverTokensPerSecond, 3);
  assert.equal(open.tokensPerRound, 2);
  assert.equal(
    aggregate(scenario('device-only'), [record({})], { sloTtftMs: 500, devices: 1 }).serverTokensPerSecond,
    null,
  );
});

test('ratios are taken to u-shape, null where u-shape has no figure', () => {
  const base = aggregate(scenario('u-shape'), [record({ ttftMs: 200 })], { sloTtftMs: 500, devices: 1 });
  const hat = aggregate(scenario('hat'), [record({ scenario: 'hat', ttftMs: 100, gapsMs: [5, 5, 5, 5] })], {
    sloTtftMs: 500,
    devices: 1,
  });
  const device = aggregate(scenario('device-only'), [record({ scenario: 'device-only' })], {
    sloTtftMs: 500,
    devices: 1,
  });
  const [, h, d] = withRatios([base, hat, device], 'u-shape');
  assert.equal(h.ratioToUShape!.ttftMean, 0.5);
  assert.equal(h.ratioToUShape!.tbtMean, 0.5);
  assert.equal(d.ratioToUShape!.serverTokensPerSecond, null);
});

test('a scenario whose every request failed has no latency figures and no ratios, not zeros', () => {
  const base = aggregate(scenario('u-shape'), [record({ ttftMs: 200 })], { sloTtftMs: 500, devices: 1 });
  const failed = aggregate(
    scenario('hat'),
    [record({ scenario: 'hat', error: 'cloud closed' }), record({ scenario: 'hat', error: 'cloud closed' })],
    { sloTtftMs: 500, devices: 1 },
  );
  assert.equal(failed.requests, 0);
  assert.equal(failed.failed, 2);
  assert.equal(failed.ttftMs, null);
  assert.equal(failed.tbtMs, null);
  assert.equal(failed.tokensPerRound, null);
  assert.equal(failed.sloAttainment, 0);
  const [, h] = withRatios([base, failed], 'u-shape');
  assert.equal(h.ratioToUShape!.ttftMean, null);
  assert.equal(h.ratioToUShape!.tbtMean, null);
  const row = scenarioTable([base, h], 500)
    .split('\n')
    .find((line) => line.includes(' hat '))!;
  assert.doesNotMatch(row, /\b0\.0\b|0\.00/, `no zero figures for a scenario that never ran: ${row}`);
});

test('--scenarios always keeps the u-shape baseline and rejects unknown names', () => {
  assert.deepEqual(
    selectScenarios('hat', 32).map((s) => s.name),
    ['hat', 'u-shape'],
  );
  assert.equal(selectScenarios(undefined, 32).find((s) => s.name === 'u-sarathi')!.chunk, 32);
  assert.throws(() => selectScenarios('hat,u-medusa', 64), /unknown scenario "u-medusa"/);
});
