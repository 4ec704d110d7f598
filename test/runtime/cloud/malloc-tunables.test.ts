/** serve-cloud's glibc malloc settings: which are missing, and how hat's launchers add them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MALLOC_TUNABLES,
  missingMallocTunables,
  withMallocTunables,
} from '../../../src/runtime/cloud/malloc-tunables.ts';
import { spawnCloud } from '../../../src/apps/spawn-cloud.ts';
import { makeToySplitDir } from '../../helpers/toy-split.ts';

const linux = process.platform === 'linux';

test('the tunables a process lacks are named (on Linux; none elsewhere)', () => {
  const names = Object.keys(MALLOC_TUNABLES);
  assert.deepEqual(missingMallocTunables({}), linux ? names : []);
  assert.deepEqual(missingMallocTunables({ ...MALLOC_TUNABLES }), []);
  assert.deepEqual(
    missingMallocTunables({ MALLOC_TOP_PAD_: '0' }),
    linux ? names.filter((n) => n !== 'MALLOC_TOP_PAD_') : [],
  );
});

test("a launcher adds the tunables but keeps the caller's own values", () => {
  const env = withMallocTunables({ MALLOC_TOP_PAD_: '0', PATH: '/bin' });
  assert.equal(env.MALLOC_TOP_PAD_, '0');
  assert.equal(env.PATH, '/bin');
  assert.equal(env.MALLOC_MMAP_THRESHOLD_, MALLOC_TUNABLES.MALLOC_MMAP_THRESHOLD_);
});

test(
  'serve-cloud started by hat runs with the tunables; started without them it logs a hint',
  { skip: !linux },
  async () => {
    const split = makeToySplitDir();
    const withThem = await spawnCloud(split);
    await withThem.stop();
    assert.ok(!withThem.log.some((line) => line.includes('"hint"')), withThem.log.join('\n'));
    const bare = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('MALLOC_')));
    const without = await spawnCloud(split, [], { env: { ...bare, MALLOC_TOP_PAD_: undefined } });
    await without.stop();
    assert.ok(
      without.log.some((line) => line.includes('MALLOC_TOP_PAD_')),
      without.log.join('\n'),
    );
  },
);
