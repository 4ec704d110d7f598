import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { assignCores, forkOnCores, onCores } from '../../src/bench/cores.ts';

const hasTaskset = spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;

test('cores: shared pins nothing; one core cannot be split, and auto says why it shares', () => {
  assert.deepEqual(assignCores('shared', 8).cloud, undefined);
  assert.throws(() => assignCores('split', 1), /--cores split: it needs at least 2 cores/);
  const auto = assignCores('auto', 1);
  assert.equal(auto.devices, undefined);
  assert.match(auto.description, /not pinned: it needs at least 2 cores/);
});

test(
  'cores: split gives the cloud and the devices disjoint cores and wraps their commands in taskset',
  { skip: hasTaskset ? false : 'SKIPPED: taskset is not installed' },
  () => {
    const four = assignCores('split', 4);
    assert.deepEqual(
      [four.cloud, four.devices],
      [
        [0, 1],
        [2, 3],
      ],
    );
    const three = assignCores('auto', 3);
    assert.deepEqual([three.cloud, three.devices], [[0, 1], [2]]);
    assert.deepEqual(onCores([2, 3], 'node', ['x.js']), { command: 'taskset', args: ['-c', '2,3', 'node', 'x.js'] });
    assert.deepEqual(onCores(undefined, 'node', ['x.js']), { command: 'node', args: ['x.js'] });
    assert.deepEqual(forkOnCores([1]).execArgv.slice(0, 3), ['-c', '1', process.execPath]);
    // The pin holds in the child: it sees one core.
    const { command, args } = onCores([0], process.execPath, [
      '-e',
      'process.stdout.write(String(require("os").availableParallelism()))',
    ]);
    assert.equal(spawnSync(command, args, { encoding: 'utf8' }).stdout, '1');
  },
);
