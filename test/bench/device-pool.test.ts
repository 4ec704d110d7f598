/**
 * The bench's device processes: one that dies fails its own request with a HatError, is never handed another,
 * and leaves the pool closable (it used to throw ERR_IPC_DISCONNECTED from close() and crash the next request).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { DevicePool } from '../../src/bench/device-pool.ts';
import { allScenarios } from '../../src/bench/scenarios.ts';
import { HatError } from '../../src/errors.ts';
import { parseLinkSpec } from '../../src/runtime/link.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

test('a device process that dies fails its request; the pool goes on with the others and still closes', async () => {
  const pool = await DevicePool.start(2, {
    splitDir: join(repoRoot, 'fixtures', 'default-split'),
    cloudUrl: 'ws://127.0.0.1:1', // device-only needs no cloud
    link: parseLinkSpec('none'),
    wire: 'fp16',
    draftThreshold: 'auto',
    maxDraft: 6,
    parallelBranches: 1,
    threads: 1,
  });
  const children = (pool as unknown as { devices: Array<{ child: ChildProcess }> }).devices.map((d) => d.child);
  try {
    const deviceOnly = allScenarios(64).find((s) => s.name === 'device-only')!;
    const prompt = { ids: [0, 5, 6, 7], source: 'test' };
    const first = pool.run(deviceOnly, prompt, 400);
    children[0].kill('SIGKILL');
    await assert.rejects(
      first,
      (error: unknown) => error instanceof HatError && /device process 0/.test(error.message),
    );

    const record = await pool.run(deviceOnly, prompt, 2);
    assert.equal(record.tokens, 2, 'the live device took the next request');

    children[1].kill('SIGKILL');
    await once(children[1], 'exit');
    await assert.rejects(pool.run(deviceOnly, prompt, 2), /every device process has exited/);
  } finally {
    assert.doesNotThrow(() => pool.close());
  }
});
