/**
 * SIGTERM while the middle part is computing: a real serve-cloud process under load from two device sessions
 * drains — in-flight rounds are answered, each device gets GOING_AWAY — and exits 0 (it used to abort with
 * "terminate called after throwing an instance of 'Napi::Error'": a worker was terminated inside a run).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { isHatError } from '../../src/errors.ts';
import { spawnCloud } from '../../src/apps/spawn-cloud.ts';
import { CloudClient } from '../../src/runtime/device/cloud-client.ts';
import { manifestHash, readManifest } from '../../src/runtime/split-dir.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { waitFor, withinDeadline } from '../helpers/wait-for.ts';
import { tempDirRemovedAtExit } from '../helpers/temp-dir.ts';

const split = join(repoRoot, 'fixtures', 'default-split');
const skip = existsSync(join(split, 'manifest.json')) ? false : 'SKIPPED: fixtures/default-split is missing';

test('SIGTERM under load drains: answered rounds, GOING_AWAY to every device, exit code 0', { skip }, async () => {
  const cloud = await spawnCloud(split, ['--drain-timeout', '20']);
  const clients: CloudClient[] = [];
  try {
    const manifest = readManifest(split);
    const hidden = manifest.hidden.size;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      cloud.process.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const outcomes = await withinDeadline(
      Promise.all(
        [0, 1].map(async (device) => {
          const client = await CloudClient.connect({
            url: cloud.url,
            manifestHash: manifestHash(manifest),
            hiddenSize: hidden,
            wire: 'fp16',
          });
          clients.push(client);
          let answered = 0;
          let failure: unknown;
          // Keep four 128-token chunks in flight (each rolls the cache back to 0), until the server goes away.
          const pump = async () => {
            while (failure === undefined) {
              await client
                .forward(new Float32Array(128 * hidden).fill(0.01 * (device + 1)), 128, 0, {
                  allPositions: false,
                  prefill: true,
                })
                .then(
                  () => {
                    answered++;
                  },
                  (error: unknown) => {
                    failure = error;
                  },
                );
            }
          };
          const pumps = Promise.all([pump(), pump(), pump(), pump()]);
          if (device === 0) {
            await waitFor(() => answered >= 3, { what: 'the worker to be busy', timeoutMs: 30_000 });
            cloud.process.kill('SIGTERM');
          }
          await pumps;
          client.close();
          return { answered, failure };
        }),
      ),
      { what: 'both devices to be answered and then sent GOING_AWAY', timeoutMs: 90_000 },
    );
    // --drain-timeout 20: the server exits within it once the devices are gone; 30 s allows for a loaded machine.
    const { code, signal } = await withinDeadline(exited, { what: 'serve-cloud to exit', timeoutMs: 30_000 });
    assert.equal(signal, null, cloud.log.slice(-5).join('\n'));
    assert.equal(code, 0, cloud.log.slice(-5).join('\n'));
    for (const { answered, failure } of outcomes) {
      assert.ok(answered > 0);
      assert.ok(isHatError(failure) && failure.code === 'GOING_AWAY', String(failure));
    }
    const events = cloud.log.map((line) => {
      try {
        return JSON.parse(line).event as string;
      } catch {
        return line;
      }
    });
    assert.ok(events.includes('draining'), events.join(','));
    assert.equal(events.at(-1), 'stopped');
    assert.ok(!cloud.log.some((line) => /terminate called|Napi::Error/.test(line)));
  } finally {
    // A failure above leaves the pumps and the server running: closing the clients ends the pumps.
    for (const client of clients) client.close();
    await cloud.stop();
  }
});

test(
  'a SIGTERM sent the moment serve-cloud says where it listens drains it (exit 0), not the default kill',
  { skip },
  async () => {
    // Deterministic: the process signals itself right after writing that line, as a supervisor reading it might.
    const preload = join(tempDirRemovedAtExit('hat-signal-'), 'signal-on-listening.mjs');
    writeFileSync(
      preload,
      `const write = process.stdout.write.bind(process.stdout);
     process.stdout.write = (chunk, ...rest) => {
       const written = write(chunk, ...rest);
       if (String(chunk).includes('listening on')) process.kill(process.pid, 'SIGTERM');
       return written;
     };`,
    );
    const bin = join(repoRoot, 'bin', 'hat');
    const child = spawn(
      process.execPath,
      ['--import', preload, bin, 'serve-cloud', split, '--port', '0', '--max-batch', '1'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    const { code, signal } = await withinDeadline(
      new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once('exit', (code, signal) => resolve({ code, signal })),
      ),
      { what: 'serve-cloud to exit', timeoutMs: 60_000 },
    );
    assert.equal(signal, null, 'ended by the default action of SIGTERM');
    assert.equal(code, 0, stderr);
    assert.match(stderr, /"event":"stopped"/);
  },
);
