/** `hat deploy haproxy`: write a load-balancer configuration for serve-cloud replicas. */
import { assertReadableFile, assertWritableFile, writeFileWhole } from '../file-checks.ts';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { HatError } from '../errors.ts';
import { haproxyConfig, MIN_TUNNEL_TIMEOUT_MS } from '../deploy/haproxy.ts';
import { intOption, parseOptions, z } from './common.ts';

const schema = z.object({
  backend: z.array(z.string()).min(1, 'name at least one replica'),
  listen: z.string(),
  cert: z.string().optional(),
  maxconn: intOption(1, 10_000_000),
  // Checked (an HAProxy time, at least MIN_TUNNEL_TIMEOUT_MS) by haproxyConfig.
  tunnelTimeout: z.string(),
  out: z.string().optional(),
  force: z.boolean().default(false),
});

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerDeploy(program: Command): void {
  const deploy = program.command('deploy').description('configurations for running serve-cloud replicas');
  deploy
    .command('haproxy')
    .description(
      'HAProxy in front of serve-cloud replicas: least connections, /ready health checks, ' +
        'WebSocket tunnels, optional TLS',
    )
    .requiredOption('--backend <host:port>', 'a serve-cloud replica (repeat for each)', collect)
    .option('--listen <addr:port>', 'where devices connect', '0.0.0.0:8765')
    .option('--cert <pem>', 'certificate + key PEM: terminate TLS here so devices use wss://')
    .option('--maxconn <n>', 'most concurrent connections', '4096')
    .option(
      '--tunnel-timeout <time>',
      `how long an open WebSocket may stay silent (at least ${MIN_TUNNEL_TIMEOUT_MS / 1000}s)`,
      '1h',
    )
    .option('--out <file>', 'write the configuration here (default: print it)')
    .option('--force', 'replace --out if it exists')
    .action((raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      if (options.cert) {
        assertReadableFile(
          options.cert,
          `--cert ${options.cert}`,
          'give a PEM file holding the certificate and its key',
        );
      }
      const config = haproxyConfig({
        backends: options.backend,
        listen: options.listen,
        cert: options.cert,
        maxconn: options.maxconn,
        tunnelTimeout: options.tunnelTimeout,
      });
      if (!options.out) {
        process.stdout.write(config);
        return;
      }
      assertWritableFile(options.out, `--out ${options.out}`);
      if (existsSync(options.out) && !options.force) {
        throw new HatError(
          'OUTPUT_EXISTS',
          `${options.out} exists`,
          'choose another --out, or pass --force to replace it',
        );
      }
      // Written beside, then renamed: a half-written configuration never replaces a working one.
      writeFileWhole(options.out, config, `--out ${options.out}`);
      process.stderr.write(`wrote ${options.out}: check it with haproxy -c -f ${options.out}\n`);
    });
}
