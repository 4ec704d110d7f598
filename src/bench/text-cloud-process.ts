/** Entry of the cloud-only server as its own process (forked by the bench); tells the parent its URL over IPC. */
import { errorData } from '../errors.ts';
import { startTextCloud } from './text-cloud.ts';

const [splitDir, threads] = process.argv.slice(2);
try {
  const cloud = await startTextCloud(splitDir, { threads: threads ? Number(threads) : undefined });
  process.send!({ type: 'listening', url: cloud.url });
  process.on('disconnect', () => {
    void cloud.close().then(() => process.exit(0));
  });
} catch (error) {
  process.send!({ type: 'error', error: errorData(error) });
  process.exit(1);
}
