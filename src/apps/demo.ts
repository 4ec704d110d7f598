/**
 * `hat demo`: the whole system on the embedded default model in one go — a real serve-cloud process holding the
 * middle part, this process as the device (input part, adapter, output part), text streamed as it is committed.
 * Everything it needs ships in fixtures/default-split, so it starts writing within seconds of a fresh clone.
 */
import { describeLink } from '../runtime/link.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HatError } from '../errors.ts';
import type { Reporter } from '../reporter.ts';
import { spawnCloud } from './spawn-cloud.ts';
import { runDevice, type RunDeviceOptions, type RunDeviceResult } from '../runtime/device/run-device.ts';

export const DEFAULT_SPLIT = fileURLToPath(new URL('../../fixtures/default-split', import.meta.url));

export type DemoOptions = Omit<RunDeviceOptions, 'cloud'>;

export async function runDemo(options: DemoOptions, reporter: Reporter): Promise<RunDeviceResult & { cloud: string }> {
  if (!existsSync(join(options.splitDir, 'manifest.json'))) {
    throw new HatError(
      'BAD_MANIFEST',
      `${options.splitDir} holds no split`,
      'run `hat split <model.onnx> --out DIR` and `hat train-adapter DIR`, then `hat demo --split DIR`',
    );
  }
  if (options.link) reporter.info(describeLink(options.link));
  const progress = reporter.progress('starting serve-cloud (middle part) in its own process');
  const cloud = await spawnCloud(options.splitDir);
  progress.succeed(`serve-cloud listening on ${cloud.url}; this process is the device`);
  try {
    const result = await runDevice({ ...options, cloud: cloud.url });
    return { ...result, cloud: cloud.url };
  } finally {
    await cloud.stop();
  }
}
