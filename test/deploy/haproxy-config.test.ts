/**
 * `hat deploy haproxy`'s configuration, without replicas (test/e2e/haproxy.test.ts runs one): the --cert path is
 * written absolute and quoted, so HAProxy reads it from any directory and through spaces; --tunnel-timeout below
 * a few of serve-cloud's keepalive pings is refused in one line; and the Kubernetes example's ConfigMap is what
 * the generator writes. Checked with the real `haproxy -c` where it is installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haproxyConfig } from '../../src/deploy/haproxy.ts';
import { HatError } from '../../src/errors.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const hasHaproxy = spawnSync('haproxy', ['-v']).status === 0;
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const noHaproxy = hasHaproxy ? false : 'SKIPPED: haproxy is not installed (apt-get install -y haproxy)';

function hat(args: string[], cwd = repoRoot) {
  const run = spawnSync(process.execPath, [join(repoRoot, 'bin', 'hat'), ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, CI: '1' },
    timeout: 60_000,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr.trim() };
}

function assertOneLine(args: string[], code: string, pattern: RegExp): void {
  const { status, stderr } = hat(args);
  assert.equal(status, 1, stderr);
  assert.equal(stderr.split('\n').length, 1, `one line, got:\n${stderr}`);
  assert.match(stderr, new RegExp(`^error\\[${code}\\]: .* — `), stderr);
  assert.match(stderr, pattern);
}

/** `haproxy -c` on a configuration, run from `cwd`. */
function haproxyCheck(config: string, cwd: string) {
  const check = spawnSync('haproxy', ['-c', '-f', config], { cwd, encoding: 'utf8' });
  return { ok: check.status === 0, output: check.stdout + check.stderr };
}

test(
  '--cert relative and with a space: written absolute and quoted, and haproxy -c accepts it from another directory',
  { skip: noHaproxy || (hasOpenssl ? false : 'SKIPPED: openssl is not installed') },
  () => {
    const work = mkdtempSync(join(tmpdir(), 'hat-deploy-cert-'));
    try {
      mkdirSync(join(work, 'my certs'));
      const made = spawnSync(
        'sh',
        [
          '-c',
          'openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hat-test -keyout key.pem -out cert.pem ' +
            '&& cat cert.pem key.pem > "my certs/hat.pem"',
        ],
        { cwd: work },
      );
      assert.equal(made.status, 0, String(made.stderr));
      const config = join(work, 'haproxy.cfg');
      const run = hat(
        ['deploy', 'haproxy', '--backend', '127.0.0.1:9001', '--cert', 'my certs/hat.pem', '--out', config],
        work,
      );
      assert.equal(run.status, 0, run.stderr);
      assert.match(readFileSync(config, 'utf8'), new RegExp(` ssl crt '${join(work, 'my certs', 'hat.pem')}'\n`));
      const check = haproxyCheck(config, '/');
      assert.ok(check.ok, check.output);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  },
);

test('a --cert path HAProxy cannot quote (a single quote, a newline) is one BAD_OPTION line', () => {
  const work = mkdtempSync(join(tmpdir(), "hat-deploy-it's-"));
  try {
    const pem = join(work, 'hat.pem');
    writeFileSync(pem, 'not checked before the path');
    assertOneLine(['deploy', 'haproxy', '--backend', 'a:1', '--cert', pem], 'BAD_OPTION', /--cert .* single quote/);
    assert.throws(
      () => haproxyConfig({ backends: ['a:1'], listen: ':1', cert: 'a\nfrontend evil' }),
      (e) => e instanceof HatError && e.code === 'BAD_OPTION',
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test("--tunnel-timeout under 15s (0 included) or over HAProxy's 24d is one BAD_OPTION line; 15s passes", () => {
  assertOneLine(
    ['deploy', 'haproxy', '--backend', 'a:1', '--tunnel-timeout', '5s'],
    'BAD_OPTION',
    /--tunnel-timeout 5s is shorter than 15s — .*keepalive/,
  );
  for (const value of ['0', '14999', '14s', '25d', '1y', '-1s']) {
    assert.throws(
      () => haproxyConfig({ backends: ['a:1'], listen: '0.0.0.0:1', tunnelTimeout: value }),
      (e) => e instanceof HatError && e.code === 'BAD_OPTION' && e.message.includes(`--tunnel-timeout ${value} `),
      value,
    );
  }
  for (const value of ['15s', '15000', '1m', '1h', '24d']) {
    const config = haproxyConfig({ backends: ['a:1'], listen: '0.0.0.0:1', tunnelTimeout: value });
    assert.match(config, new RegExp(`\n {4}timeout tunnel ${value}\n`));
  }
});

/** The sections of an HAProxy configuration: header line → its directives, comments and blank lines left out. */
function sections(config: string): Map<string, string[]> {
  const result = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of config.split('\n')) {
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) result.set(line.trim(), (current = []));
    else current?.push(line.trim());
  }
  return result;
}

/** The ConfigMap's haproxy.cfg block scalar in deploy/kubernetes/hat-cloud.yaml, unindented. */
function kubernetesConfig(): string {
  const yaml = readFileSync(join(repoRoot, 'deploy', 'kubernetes', 'hat-cloud.yaml'), 'utf8');
  const block = /\n {2}haproxy\.cfg: \|\n((?: {4}.*\n|\n)+)/.exec(yaml);
  assert.ok(block, 'hat-cloud.yaml has a haproxy.cfg block');
  return block[1].replace(/^ {4}/gm, '');
}

test("the Kubernetes example's haproxy.cfg is what hat deploy haproxy writes, but for replica discovery", () => {
  const generated = sections(haproxyConfig({ backends: ['127.0.0.1:9001'], listen: '0.0.0.0:8765' }));
  const example = sections(kubernetesConfig());
  assert.deepEqual(example.get('global'), generated.get('global'));
  assert.deepEqual(example.get('defaults'), generated.get('defaults'));
  // Replicas come from the headless service: a resolvers section, server-template instead of server lines.
  const other = (directives: string[] = []) =>
    directives.filter((d) => !/^(bind|server|server-template|default-server) /.test(d));
  for (const name of ['frontend hat_devices', 'backend serve_cloud']) {
    assert.deepEqual(other(example.get(name)), other(generated.get(name)), name);
  }
  const defaultServer = generated.get('backend serve_cloud')!.find((d) => d.startsWith('default-server '))!;
  assert.ok(
    example.get('backend serve_cloud')!.some((d) => d.startsWith(`${defaultServer} resolvers kube`)),
    `the example's default-server extends "${defaultServer}"`,
  );
});

test("the Kubernetes example's haproxy.cfg passes haproxy -c", { skip: noHaproxy }, () => {
  const work = mkdtempSync(join(tmpdir(), 'hat-deploy-k8s-'));
  try {
    const config = join(work, 'haproxy.cfg');
    writeFileSync(config, kubernetesConfig());
    const check = haproxyCheck(config, work);
    assert.ok(check.ok, check.output);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
