/**
 * hat's layers, enforced in CI (`npm run check:layers`, part of `npm test`): dependencies point one way.
 *   base      src/errors.ts, src/reporter.ts, src/random.ts, src/json-file.ts, src/file-checks.ts, src/onnx/
 *   engine    src/runtime/*.ts (sessions, part runner, sampling, KV, manifest contract, tokenizer, generation loop),
 *             src/runtime/protocol/, src/runtime/speculative/, src/split/manifest.ts; it may also import
 *             src/split/kv-names.ts, which sits in domain (the KV naming `hat split` and the runtime share)
 *   domain    src/split/, src/models/, src/train-adapter/, src/runtime/device/, src/runtime/cloud/
 *   apps      src/bench/, src/api/, src/deploy/, src/reliability/, src/apps/
 *   commands  src/commands/ (only src/cli.ts imports them)
 */
const BASE = '^src/((errors|reporter|random|json-file|file-checks)\\.ts|onnx/)';
const ENGINE = '^src/(runtime/[^/]+\\.ts|runtime/(protocol|speculative)/|split/manifest\\.ts)';
module.exports = {
  forbidden: [
    {
      name: 'engine-knows-no-domain',
      comment: 'The engine knows nothing of devices, clouds, splitting, training, benches, apps or commands.',
      severity: 'error',
      from: { path: ENGINE },
      to: {
        path: '^src/(runtime/(device|cloud)/|split/(?!manifest\\.ts|kv-names\\.ts)|models/|train-adapter/|bench/|api/|deploy/|reliability/|apps/|commands/)',
      },
    },
    {
      name: 'base-knows-nothing-above',
      comment: 'Base modules import only base modules.',
      severity: 'error',
      from: { path: BASE },
      to: { path: '^src/', pathNot: BASE },
    },
    {
      name: 'device-and-cloud-apart',
      comment: 'The two sides meet only through the protocol.',
      severity: 'error',
      from: { path: '^src/runtime/device/' },
      to: { path: '^src/runtime/cloud/' },
    },
    {
      name: 'cloud-and-device-apart',
      severity: 'error',
      from: { path: '^src/runtime/cloud/' },
      to: { path: '^src/runtime/device/' },
    },
    {
      name: 'domain-below-apps',
      severity: 'error',
      from: { path: '^src/(split|models|train-adapter|runtime)/' },
      to: { path: '^src/(bench|api|deploy|reliability|apps|commands)/' },
    },
    {
      name: 'commands-only-from-cli',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(cli\\.ts|commands/)' },
      to: { path: '^src/commands/' },
    },
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
