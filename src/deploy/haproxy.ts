/**
 * `hat deploy haproxy`: an HAProxy configuration for serve-cloud replicas, rendered from haproxy.cfg.jinja with
 * @huggingface/jinja (a maintained Jinja implementation, the one the chat templates use).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Template } from '@huggingface/jinja';
import { HatError } from '../errors.ts';
import { DEFAULT_KEEPALIVE_MS } from '../runtime/cloud/server.ts';

export interface HaproxyOptions {
  /** serve-cloud replicas as HOST:PORT. */
  backends: string[];
  /** ADDRESS:PORT devices connect to. */
  listen: string;
  /**
   * PEM with certificate and key: HAProxy terminates TLS and devices use wss://. Written as an absolute path
   * (resolved against this process's directory), single-quoted.
   */
  cert?: string;
  maxconn?: number;
  /** How long an upgraded WebSocket may stay quiet (HAProxy time format), at least MIN_TUNNEL_TIMEOUT_MS. */
  tunnelTimeout?: string;
  /** How often HAProxy checks each replica's /ready (HAProxy time format). */
  checkInterval?: string;
}

/**
 * serve-cloud pings every device each DEFAULT_KEEPALIVE_MS and the pong answers: that traffic keeps an idle
 * session's tunnel open only if the tunnel timeout spans a few pings. Any shorter, and HAProxy may cut a session
 * whose device is between generations.
 */
export const MIN_TUNNEL_TIMEOUT_MS = 3 * DEFAULT_KEEPALIVE_MS;
/** HAProxy refuses longer timeouts (a signed 32-bit count of milliseconds, about 24.8 days). */
const MAX_HAPROXY_TIME_MS = 2 ** 31 - 1;

const HAPROXY_TIME = /^(\d+)(ms|s|m|h|d)?$/;
const TIME_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** An HAProxy time (a number with an optional unit; no unit means milliseconds) in ms, or undefined if malformed. */
export function haproxyTimeMs(value: string): number | undefined {
  const match = HAPROXY_TIME.exec(value);
  return match ? Number(match[1]) * TIME_UNIT_MS[match[2] ?? 'ms'] : undefined;
}

function checkTime(value: string, option: string, minMs: number): string {
  const ms = haproxyTimeMs(value);
  if (ms === undefined || ms > MAX_HAPROXY_TIME_MS) {
    throw new HatError(
      'BAD_OPTION',
      `${option} ${value} is not an HAProxy time${ms === undefined ? '' : ' (at most 24d)'}`,
      `give a number with a unit (ms, s, m, h, d), e.g. ${option} 1h or 600s`,
    );
  }
  if (ms < minMs) {
    throw new HatError(
      'BAD_OPTION',
      `${option} ${value} is shorter than ${minMs / 1000}s`,
      option === '--tunnel-timeout'
        ? `serve-cloud's keepalive pings come every ${DEFAULT_KEEPALIVE_MS / 1000} s; ` +
            `give at least ${minMs / 1000}s, e.g. ${option} 1h`
        : `give at least ${minMs} ms`,
    );
  }
  return value;
}

/**
 * The certificate path as one HAProxy argument: absolute (HAProxy may run from any directory) and in single
 * quotes, inside which HAProxy takes everything literally (spaces, #, $, backslashes, double quotes). A single
 * quote or a control character (a newline would start a new configuration line) cannot be written there.
 */
function quoteCertPath(path: string): string {
  if (/['\x00-\x1f\x7f]/.test(path)) {
    throw new HatError(
      'BAD_OPTION',
      `--cert ${JSON.stringify(path)} holds a single quote or a control character`,
      'HAProxy cannot read that path from its configuration; rename or move the PEM file',
    );
  }
  return `'${resolve(path)}'`;
}

function checkMaxconn(value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new HatError('BAD_OPTION', `--maxconn ${value} is not a positive integer`, 'e.g. --maxconn 4096');
  }
  return value;
}

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

function checkHostPort(value: string, option: string): string {
  const match = HOST_PORT.exec(value);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw new HatError('BAD_OPTION', `${option} ${value} is not HOST:PORT`, `e.g. ${option} 10.0.0.5:8765`);
  }
  return value;
}

export function haproxyConfig(options: HaproxyOptions): string {
  if (options.backends.length === 0)
    throw new HatError('BAD_OPTION', 'no --backend given', 'name each serve-cloud replica with --backend HOST:PORT');
  const template = new Template(readFileSync(new URL('./haproxy.cfg.jinja', import.meta.url), 'utf8'));
  return `${template
    .render({
      backends: options.backends.map((b) => checkHostPort(b, '--backend')),
      listen: checkHostPort(options.listen, '--listen'),
      cert: options.cert === undefined ? undefined : quoteCertPath(options.cert),
      maxconn: checkMaxconn(options.maxconn ?? 4096),
      tunnelTimeout: checkTime(options.tunnelTimeout ?? '1h', '--tunnel-timeout', MIN_TUNNEL_TIMEOUT_MS),
      checkInterval: checkTime(options.checkInterval ?? '1s', 'checkInterval', 1),
    })
    .trim()}\n`;
}
