/**
 * What a device holds: the input part, the output part and (after `hat train-adapter`) the adapter, opened from
 * a split directory or a device bundle (no middle part needed). The output part is opened twice over one
 * session when it owns decoder layers (J > 0), so drafting never disturbs the verified cache.
 */
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { HatError } from '../../errors.ts';
import type { SplitManifest } from '../../split/manifest.ts';
import { PartRunner, type PartIO } from '../part-runner.ts';
import { openAll, openPart } from '../split-dir.ts';
import type { SessionOptions } from '../session.ts';

export interface DeviceParts {
  manifest: SplitManifest;
  input: PartRunner;
  /** The output part on the verified positions. */
  output: PartRunner;
  /** The output part as the small model's head; the same runner as `output` when the part holds no cache. */
  draftOutput: PartRunner;
  adapter?: PartRunner;
}

export function adapterIO(manifest: SplitManifest): PartIO {
  const adapter = manifest.adapter;
  if (!adapter)
    throw new HatError('BAD_MANIFEST', 'the split has no adapter', 'run `hat train-adapter <split-dir>` first');
  return { hiddenInput: adapter.input, output: adapter.output, kv: adapter.kv ?? [] };
}

export async function openDeviceParts(
  splitDir: string,
  manifest: SplitManifest,
  options: SessionOptions & { withAdapter: boolean },
): Promise<DeviceParts> {
  const adapterFile = resolve(splitDir, manifest.adapter?.file ?? 'adapter.onnx');
  if (options.withAdapter && (!manifest.adapter || !existsSync(adapterFile))) {
    throw new HatError(
      'BAD_MANIFEST',
      `${join(splitDir, 'adapter.onnx')} is missing`,
      'run `hat train-adapter <split-dir>` first, or pass --no-draft',
    );
  }
  const [input, output, adapter] = await openAll([
    () => openPart(splitDir, manifest, 'input', options),
    () => openPart(splitDir, manifest, 'output', options),
    ...(options.withAdapter ? [() => PartRunner.open(adapterFile, adapterIO(manifest), options, 'adapter')] : []),
  ]);
  const draftOutput = manifest.kv.output.length > 0 ? PartRunner.fromSession(output.session, output.io) : output;
  return { manifest, input, output, draftOutput, adapter };
}
