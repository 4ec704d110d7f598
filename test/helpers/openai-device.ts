/**
 * For end-to-end tests of the device's OpenAI API: a real `hat run-device --serve` process, and a WebSocket relay
 * between device and cloud that records every message the device sends (unmasked, exactly the hat frames) and can
 * slow the cloud's answers down.
 */
import type { ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { spawnHat } from '../../src/apps/spawn-cloud.ts';

export interface DeviceServer {
  /** e.g. http://127.0.0.1:PORT/v1: an OpenAI client's baseURL. */
  baseURL: string;
  /** http://127.0.0.1:PORT */
  origin: string;
  process: ChildProcess;
  stderr: string[];
  stop(): Promise<void>;
}

/** Starts `hat run-device <bundle> --cloud <url> --serve 127.0.0.1:0 …` and resolves once it serves. */
export async function spawnDeviceServer(
  bundle: string,
  cloud: string,
  extraArgs: string[] = [],
  timeoutMs = 60_000,
): Promise<DeviceServer> {
  const started = await spawnHat(
    ['run-device', bundle, '--cloud', cloud, '--serve', '127.0.0.1:0', ...extraArgs],
    /serving the OpenAI API on (http:\/\/\S+\/v1)/,
    'run-device --serve',
    { timeoutMs },
  );
  const baseURL = started.match[1];
  return {
    baseURL,
    origin: baseURL.replace(/\/v1$/, ''),
    process: started.process,
    stderr: started.log,
    stop: started.stop,
  };
}

export interface Relay {
  /** Where the device connects instead of the cloud. */
  url: string;
  /** Everything the device sent: its upgrade request (as text) and every WebSocket message. */
  uplink: Buffer[];
  /** Device → cloud messages so far. */
  readonly messagesUp: number;
  /** Extra delay on each cloud → device message, ms (0 by default). */
  delayMs: number;
  close(): Promise<void>;
}

/** A WebSocket relay to `target` (ws://HOST:PORT) that records the device's side of every connection. */
export async function recordingRelay(target: string): Promise<Relay> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const relay: Relay = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    uplink: [],
    get messagesUp() {
      return messagesUp;
    },
    delayMs: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
  let messagesUp = 0;
  wss.on('connection', (device, request) => {
    relay.uplink.push(Buffer.from(`${request.method} ${request.url}\n${JSON.stringify(request.headers)}`));
    const cloud = new WebSocket(`${target}${request.url ?? '/'}`, { perMessageDeflate: false });
    const early: Buffer[] = [];
    cloud.on('open', () => {
      for (const data of early.splice(0)) cloud.send(data, { binary: true });
    });
    device.on('message', (data: Buffer) => {
      relay.uplink.push(Buffer.from(data));
      messagesUp++;
      if (cloud.readyState === WebSocket.OPEN) cloud.send(data, { binary: true });
      else early.push(data);
    });
    cloud.on('message', (data: Buffer) => {
      const deliver = () => {
        if (device.readyState === WebSocket.OPEN) device.send(data, { binary: true });
      };
      // Unreferenced: a message still held when the tests end does not keep the process alive for the delay.
      if (relay.delayMs > 0) setTimeout(deliver, relay.delayMs).unref();
      else deliver();
    });
    const closeBoth = () => {
      device.close();
      cloud.close();
    };
    device.on('close', closeBoth);
    cloud.on('close', closeBoth);
    device.on('error', closeBoth);
    cloud.on('error', closeBoth);
  });
  return relay;
}
