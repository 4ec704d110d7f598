/**
 * `hat deploy haproxy`: an HAProxy configuration for serve-cloud replicas, rendered from haproxy.cfg.jinja with
 * @huggingface/jinja (a maintained Jinja implementation, the one the chat templates use).
 */
import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { HatError } from '../errors.ts';

export interface HaproxyOptions {
  /** serve-cloud replicas as HOST:PORT. */
  backends: string[];
  /** ADDRESS:PORT devices connect to. */
  listen: string;
  /** PEM with certificate and key: HAProxy terminates TLS and devices use wss://. */
  cert?: string;
  maxconn?: number;
  /** How long an upgraded WebSocket may stay quiet (HAProxy time format). */
  tunnelTimeout?: string;
  checkInterval?: string;
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
      cert: options.cert,
      maxconn: options.maxconn ?? 4096,
      tunnelTimeout: options.tunnelTimeout ?? '1h',
      checkInterval: options.checkInterval ?? '1s',
    })
    .trim()}\n`;
}
