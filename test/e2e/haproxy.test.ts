/**
 * Replicas behind a real load balancer: two `hat serve-cloud` processes behind HAProxy (configured by
 * `hat deploy haproxy`, terminating TLS so devices use wss://), real `hat run-device` processes through it. The
 * replica serving a device is killed mid-generation: the device reconnects through HAProxy to the other replica,
 * replays its history, and its output still equals `hat generate`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HAT_BIN, spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { waitFor, withinDeadline } from '../helpers/wait-for.ts';

const run = promisify(execFile);
const split = join(repoRoot, 'fixtures', 'default-split');
const model = join(repoRoot, 'fixtures', 'default');
const hasHaproxy = spawnSync('haproxy', ['-v']).status === 0;
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const skip = !hasHaproxy
  ? 'SKIPPED: haproxy is not installed (apt-get install -y haproxy; .ci/run installs it)'
  : !hasOpenssl
    ? 'SKIPPED: openssl is not installed'
    : existsSync(join(split, 'manifest.json'))
      ? false
      : 'SKIPPED: fixtures/default-split is missing';
const PROMPT = 'And it came to pass, when the king heard the words of the law, that he rent his clothes';
const work = mkdtempSync(join(tmpdir(), 'hat-haproxy-'));
const replicas: SpawnedCloud[] = [];
let balancer: ChildProcess | undefined;
let cloudUrl = '';
/** The device trusts the balancer's self-signed certificate as a user would trust their CA. */
let deviceEnv: NodeJS.ProcessEnv = {};

/** A hat command to its end; killed (and failing) if it has not ended within 5 minutes. */
const hat = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, [HAT_BIN, ...args], {
    cwd: repoRoot,
    maxBuffer: 16 << 20,
    env: { ...process.env, ...env },
    timeout: 300_000,
  });

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
      .listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      })
      .on('error', reject);
  });
}

const portOf = (cloud: SpawnedCloud) => new URL(cloud.url).port;

async function sessionsOn(cloud: SpawnedCloud): Promise<number> {
  try {
    const response = await fetch(`http://127.0.0.1:${portOf(cloud)}/health`);
    return ((await response.json()) as { sessions: number }).sessions;
  } catch {
    return -1;
  }
}

before(async () => {
  if (skip) return;
  // Three: the drain test takes one away, the kill test another.
  for (let i = 0; i < 3; i++) replicas.push(await spawnCloud(split, ['--max-sessions', '8']));
  const cert = join(work, 'hat.pem');
  const made = spawnSync('sh', [
    '-c',
    `openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hat-test -addext ` +
      `subjectAltName=IP:127.0.0.1 -keyout ${work}/key.pem -out ${work}/cert.pem ` +
      `&& cat ${work}/cert.pem ${work}/key.pem > ${cert}`,
  ]);
  assert.equal(made.status, 0, String(made.stderr));
  deviceEnv = { NODE_EXTRA_CA_CERTS: join(work, 'cert.pem') };
  const port = await freePort();
  const config = join(work, 'haproxy.cfg');
  await hat([
    'deploy',
    'haproxy',
    ...replicas.flatMap((r) => ['--backend', `127.0.0.1:${portOf(r)}`]),
    '--listen',
    `127.0.0.1:${port}`,
    '--cert',
    cert,
    '--out',
    config,
  ]);
  const check = spawnSync('haproxy', ['-c', '-f', config], { encoding: 'utf8' });
  assert.equal(check.status, 0, check.stderr + check.stdout);
  balancer = spawn('haproxy', ['-db', '-f', config], { stdio: 'ignore' });
  cloudUrl = `wss://127.0.0.1:${port}`;
  // Ready once HAProxy forwards /ready to a replica (both start up; the checks mark them up within a second).
  const ca = readFileSync(join(work, 'cert.pem'));
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        httpsGet(`https://127.0.0.1:${port}/ready`, { ca, timeout: 1000 }, (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        }).on('error', () => resolve(false));
      }),
    { timeoutMs: 30_000, what: 'HAProxy forwarding /ready to a replica over TLS' },
  );
});

after(async () => {
  balancer?.kill('SIGTERM');
  for (const replica of replicas) await replica.stop();
  rmSync(work, { recursive: true, force: true });
});

test(
  'a device reaches a replica through HAProxy over wss:// and writes what hat generate writes',
  { skip },
  async () => {
    const reference = JSON.parse(
      (await hat(['generate', model, '--prompt', PROMPT, '--max-new-tokens', '32', '--json'])).stdout,
    );
    const device = JSON.parse(
      (
        await hat(
          [
            'run-device',
            split,
            '--cloud',
            cloudUrl,
            '--prompt',
            PROMPT,
            '--max-new-tokens',
            '32',
            '--wire',
            'fp32',
            '--json',
          ],
          deviceEnv,
        )
      ).stdout,
    );
    assert.deepEqual(device.ids, reference.ids);
    assert.equal(device.metrics.reconnects, 0);
  },
);

/** The first live replica holding a device session. */
async function servingReplica(): Promise<SpawnedCloud> {
  let serving: SpawnedCloud | undefined;
  await waitFor(
    async () => {
      for (const replica of replicas) if ((await sessionsOn(replica)) > 0) serving ??= replica;
      return serving !== undefined;
    },
    { timeoutMs: 30_000, what: 'a device session to appear on a replica' },
  );
  return serving!;
}

/** A run-device process through the balancer; an EMULATED 30 ms round trip stretches it over seconds. */
function startDevice(tokens: string) {
  const device = spawn(
    process.execPath,
    [
      HAT_BIN,
      'run-device',
      split,
      '--cloud',
      cloudUrl,
      '--prompt',
      PROMPT,
      '--max-new-tokens',
      tokens,
      '--wire',
      'fp32',
      '--link',
      'up=100MB,down=100MB,rtt=30,jitter=0',
      '--reconnect',
      '8',
      '--json',
    ],
    { cwd: repoRoot, env: { ...process.env, ...deviceEnv }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  device.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  device.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => device.once('exit', resolve));
  return {
    /** Its exit code, or a rejection if it has not exited within 2 minutes (a few seconds normally). */
    exited: () => withinDeadline(exited, { what: 'run-device to exit', timeoutMs: 120_000 }),
    output: () => ({ stdout, stderr }),
    /** For a test's finally: a device still running after a failure does not outlive the test. */
    kill: () => {
      if (device.exitCode === null && device.signalCode === null) device.kill('SIGKILL');
    },
  };
}

test(
  'a replica drained with SIGTERM under load: it exits 0 and no device fails; outputs unchanged',
  { skip },
  async () => {
    const tokens = '120';
    const reference = JSON.parse(
      (await hat(['generate', model, '--prompt', PROMPT, '--max-new-tokens', tokens, '--json'])).stdout,
    );
    const devices = [startDevice(tokens), startDevice(tokens)];
    try {
      const serving = await servingReplica();
      const drained = new Promise<number | null>((resolve) => serving.process.once('exit', resolve));
      serving.process.kill('SIGTERM');
      const drainedCode = await withinDeadline(drained, { what: 'the drained replica to exit', timeoutMs: 60_000 });
      assert.equal(drainedCode, 0, 'the drained replica exits 0');
      for (const device of devices) {
        const code = await device.exited();
        const { stdout, stderr } = device.output();
        assert.equal(code, 0, stderr);
        const result = JSON.parse(stdout);
        assert.equal(result.error, undefined);
        assert.deepEqual(result.ids, reference.ids);
      }
      replicas.splice(replicas.indexOf(serving), 1);
    } finally {
      for (const device of devices) device.kill();
    }
  },
);

test(
  'the replica serving a device is killed mid-generation: the device resumes on the other, output unchanged',
  { skip },
  async () => {
    const tokens = '160';
    const reference = JSON.parse(
      (await hat(['generate', model, '--prompt', PROMPT, '--max-new-tokens', tokens, '--json'])).stdout,
    );
    const device = startDevice(tokens);
    try {
      const serving = await servingReplica();
      serving.process.kill('SIGKILL');

      const code = await device.exited();
      const { stdout, stderr } = device.output();
      assert.equal(code, 0, stderr);
      const result = JSON.parse(stdout);
      assert.equal(result.error, undefined);
      assert.ok(result.metrics.reconnects >= 1, `reconnects ${result.metrics.reconnects}`);
      assert.deepEqual(result.ids, reference.ids);
      const survivor = replicas.find((r) => r !== serving)!;
      assert.equal(survivor.process.exitCode, null, 'the other replica kept serving');
    } finally {
      device.kill();
    }
  },
);
