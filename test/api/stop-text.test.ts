import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopText, tokensUntilStop } from '../../src/api/stop-text.ts';

/** Feeds `pieces` one at a time and returns what was emitted, piece by piece. */
function feed(stops: string[], pieces: string[]): { emitted: string[]; stop: StopText } {
  const stop = new StopText(stops);
  const emitted = pieces.map((p) => stop.push(p));
  emitted.push(stop.flush());
  return { emitted, stop };
}

test('text stops exactly before the first stop string, which is never emitted', () => {
  const { emitted, stop } = feed(['\n\n'], ['And God', ' said.\n', '\nLet there']);
  assert.equal(emitted.join(''), 'And God said.');
  assert.equal(stop.output, 'And God said.');
  assert.equal(stop.stopIndex, 'And God said.'.length);
  assert.deepEqual(emitted, ['And God', ' said.', '', '']);
});

test('a possible start of a stop string is held back until it is decided', () => {
  const { emitted } = feed(['LORD'], ['the LO', 'RD said']);
  assert.deepEqual(emitted, ['the ', '', '']);
  const missed = feed(['LORD'], ['the LO', 'ng day']);
  assert.deepEqual(missed.emitted, ['the ', 'LOng day', '']);
  assert.equal(missed.stop.stopped, false);
});

test('the earliest of several stops wins, whichever is listed first; empty stops are ignored', () => {
  const { stop } = feed(['earth', 'heaven', ''], ['In the beginning God created the heaven and the earth']);
  assert.equal(stop.output, 'In the beginning God created the ');
  const none = feed([], ['a', 'b']);
  assert.deepEqual(none.emitted, ['a', 'b', '']);
});

test('a stop split over many pieces, and nothing after a stop', () => {
  const { emitted, stop } = feed(['<END>'], ['x<', 'E', 'N', 'D', '>tail', 'more']);
  assert.equal(emitted.join(''), 'x');
  assert.equal(stop.output, 'x');
});

test('tokensUntilStop finds the first prefix whose text contains a stop', () => {
  const pieces = ['And', ' God', ' said', ',', ' Let', ' there'];
  const textOf = (k: number) => pieces.slice(0, k).join('');
  assert.equal(tokensUntilStop(pieces.length, ['said,'], textOf), 4);
  assert.equal(tokensUntilStop(pieces.length, ['God'], textOf), 2);
  assert.equal(tokensUntilStop(pieces.length, ['And'], textOf), 1);
  assert.equal(tokensUntilStop(pieces.length, [' there', 'Let'], textOf), 5);
});
