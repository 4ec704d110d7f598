import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ema, LinearLatencyModel } from '../../src/runtime/ema.ts';

test('Ema weighs history 0.8 and starts at the first sample', () => {
  const ema = new Ema();
  assert.equal(ema.value, undefined);
  assert.equal(ema.update(10), 10);
  assert.ok(Math.abs(ema.update(20) - 12) < 1e-12);
});

test('LinearLatencyModel recovers base and slope and follows a change in load', () => {
  const model = new LinearLatencyModel();
  for (let i = 0; i < 50; i++) for (const x of [1, 8, 64]) model.observe(x, 2 + 0.5 * x);
  const fitted = model.coefficients;
  assert.ok(Math.abs(fitted.baseMs - 2) < 1e-6 && Math.abs(fitted.perTokenMs - 0.5) < 1e-6);
  for (let i = 0; i < 50; i++) for (const x of [1, 8, 64]) model.observe(x, 4 + 1.0 * x);
  assert.ok(Math.abs(model.predict(100) - 104) < 1);
  const single = new LinearLatencyModel();
  single.observe(10, 20);
  assert.equal(single.predict(5), 10);
});
