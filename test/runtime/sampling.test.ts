import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  argmax,
  drawFrom,
  greedyChoice,
  makeSampler,
  nucleus,
  samplingDistribution,
  seededUniform,
  softmax,
  topIndices,
} from '../../src/runtime/sampling.ts';

const logits = Float32Array.of(1, 3, 2, -1, 2.5);

test('greedy picks the argmax and temperature 0 is greedy', () => {
  assert.equal(argmax(logits), 1);
  assert.equal(makeSampler({ temperature: 0, topP: 1 })(logits), 1);
  assert.deepEqual(Array.from(samplingDistribution(logits, { temperature: 0, topP: 0.5 })), [0, 1, 0, 0, 0]);
});

test('softmax sums to one and temperature sharpens it', () => {
  const p = softmax(logits);
  assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  assert.ok(softmax(logits, 0.1)[1] > 0.99);
});

test('top-p keeps the smallest most-likely set reaching p, renormalised', () => {
  const p = Float64Array.of(0.1, 0.5, 0.25, 0.05, 0.1);
  const kept = nucleus(p, 0.7);
  assert.deepEqual(
    Array.from(kept, (v) => Number(v.toFixed(6))),
    [0, 0.666667, 0.333333, 0, 0],
  );
  assert.equal(nucleus(p, 1), p);
});

test('seeded sampling repeats exactly and follows the distribution', () => {
  const draw = (seed: number) => {
    const s = makeSampler({ temperature: 1, topP: 1, seed });
    return Array.from({ length: 50 }, () => s(logits));
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  const p = softmax(logits);
  const uniform = seededUniform(1);
  const counts = new Array(logits.length).fill(0);
  const n = 20000;
  for (let i = 0; i < n; i++) counts[drawFrom(p, uniform)]++;
  counts.forEach((count, i) => assert.ok(Math.abs(count / n - p[i]) < 0.015, `token ${i}: ${count / n} vs ${p[i]}`));
});

test('greedyChoice gives the argmax and its softmax probability; topIndices the k largest in order', () => {
  const tied = Float32Array.from([0.5, 3, -1, 3, 2.5, 0]);
  const { token, probability } = greedyChoice(tied);
  assert.equal(token, 1);
  assert.ok(Math.abs(probability - softmax(tied)[1]) < 1e-12);
  assert.deepEqual(topIndices(tied, 3), [1, 3, 4]);
  assert.deepEqual(topIndices(tied, 10), [1, 3, 4, 0, 5, 2]);
  const random = Float32Array.from({ length: 3000 }, (_, i) => (Math.sin(i * 12.9898) * 43758.5453) % 7);
  const sorted = [...random.keys()].sort((a, b) => random[b] - random[a] || a - b);
  assert.deepEqual(topIndices(random, 4), sorted.slice(0, 4));
  // No entries, and no stray ones: count 0 used to store an index at top[-1].
  assert.deepEqual(topIndices(tied, 0), []);
  assert.deepEqual(Object.keys(topIndices(tied, 0)), []);
});
