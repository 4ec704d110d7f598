/**
 * Entry of one benchmark device as its own process (forked by DevicePool with advanced IPC serialisation):
 * `init` opens the parts, then `run` / `calibrate` requests are answered one at a time.
 */
import { errorData } from '../errors.ts';
import { DeviceRunner } from './device-runner.ts';
import type { DeviceRequest, DeviceReply } from './device-pool.ts';

let runner: DeviceRunner | undefined;

const reply = (message: DeviceReply) => process.send!(message);

process.on('message', async (request: DeviceRequest) => {
  try {
    if (request.type === 'init') {
      runner = await DeviceRunner.open(request.config);
      reply({ type: 'ready', id: request.id, hasAdapter: runner.hasAdapter });
    } else if (request.type === 'run') {
      reply({
        type: 'record',
        id: request.id,
        record: await runner!.run(request.scenario, request.prompt, request.maxNewTokens),
      });
    } else if (request.type === 'calibrate') {
      reply({ type: 'costs', id: request.id, costs: await runner!.calibrate() });
    }
  } catch (error) {
    reply({ type: 'error', id: request.id, error: errorData(error) });
  }
});
process.on('disconnect', () => process.exit(0));
