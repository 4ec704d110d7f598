/**
 * `hat run-device <bundle> --serve [HOST:]PORT`: open the device once, check the cloud (a refusal that can pass —
 * unreachable, full, draining — is a warning, and requests answer 503 until it passes; one that cannot, such as a
 * split the cloud does not serve or a bad token, stops the start), and serve the OpenAI-compatible API on loopback
 * by default.
 */
import { HatError, isRetryable } from '../errors.ts';
import type { Reporter } from '../reporter.ts';
import { HatDevice, type HatDeviceOptions } from './hat-device.ts';
import { serveOpenAI, type OpenAIServer } from './openai/server.ts';

export interface ServeAddress {
  host: string;
  port: number;
}

/** `8080` → 127.0.0.1:8080; `0.0.0.0:8080`, `localhost:0`, `[::1]:8080` as written. */
export function parseServeAddress(text: string): ServeAddress {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) {
    throw new HatError(
      'BAD_OPTION',
      `--serve: '${text}' is not PORT or HOST:PORT`,
      'e.g. --serve 8080 or --serve 127.0.0.1:8080',
    );
  }
  const host = match[1]?.replace(/^\[(.*)\]$/, '$1') ?? '127.0.0.1';
  return { host, port };
}

export async function serveDevice(
  bundle: string,
  options: HatDeviceOptions,
  address: ServeAddress,
  reporter: Reporter,
): Promise<{ device: HatDevice; server: OpenAIServer }> {
  const device = await HatDevice.open(bundle, options);
  try {
    await device.checkCloud();
  } catch (error) {
    // A cloud that cannot take this device now (unreachable, full, draining) is what each request answers 503 for;
    // anything else (a split it does not serve, a bad token) will not pass by itself.
    if (!isRetryable(error)) {
      await device.close();
      throw error;
    }
    reporter.warn(`${(error as HatError).message} — requests will answer 503 until the cloud can take them`);
  }
  if (!device.chatTemplate) {
    reporter.warn(`${device.modelId} has no chat template: /v1/chat/completions will answer 400`);
  }
  try {
    return { device, server: await serveOpenAI(device, address) };
  } catch (error) {
    await device.close();
    throw error;
  }
}
