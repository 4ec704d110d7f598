/**
 * Session resume: when the cloud goes away mid-generation, the device opens a new session, replays the
 * input-part states of everything the middle part had been sent, and continues — greedy output token-for-token
 * the same as an uninterrupted run, nothing streamed twice or lost.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net';
import type { StartedCloud } from '../../../src/runtime/cloud/serve.ts';
import { readManifest } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { connectDeviceGenerator, GREEDY } from '../../../src/runtime/device/device-generator.ts';
import { ResumingVerifier, type ResumeEvent } from '../../../src/runtime/device/resuming-verifier.ts';
import type { ForwardOptions, ForwardResult, Verifier } from '../../../src/runtime/device/verifier.ts';
import { HatError } from '../../../src/errors.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import { addIdentityAdapter, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { waitFor, withinDeadline } from '../../helpers/wait-for.ts';

const prompt = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17, 4, 44, 12, 6];
const NEW = 30;
let split: string;
let reference: number[];

before(async () => {
  const made = await makeSmallSplit();
  split = made.split;
  addIdentityAdapter(split);
  const full = await OnnxCausalLm.open(made.model);
  reference = (await generateTokens(full, prompt, { maxNewTokens: NEW, sampler: argmax })).ids;
  await full.release();
});

const serve = (port = 0) => serveSplit(split, { port, maxSessions: 4, maxContext: 256 });

/** Generates while `disrupt` runs once `after` tokens were streamed; returns the result, the stream and the events. */
async function generateThrough(
  disrupt: (cloud: StartedCloud) => Promise<void>,
  after: number,
  options: { reconnects: number; chunk?: number },
) {
  const cloud = await serve();
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
  const events: ResumeEvent[] = [];
  const device = await connectDeviceGenerator({
    parts,
    cloud: { url: `ws://127.0.0.1:${cloud.port}`, wire: 'fp32' },
    sampling: GREEDY,
    draftThreshold: new FixedThresholdPolicy(0, 3),
    maxDraft: 3,
    reconnects: options.reconnects,
    backoff: { firstMs: 50, maxMs: 1000 },
    onResume: (event) => events.push(event),
  });
  const streamed: number[] = [];
  let disruption: Promise<void> | undefined;
  try {
    const result = await device.generator.generate(prompt, {
      maxNewTokens: NEW,
      speculative: true,
      parallelDrafting: true,
      chunk: options.chunk ?? 'off',
      onTokens: (ids) => {
        streamed.push(...ids);
        if (streamed.length >= after) disruption ??= disrupt(cloud);
      },
    });
    await disruption;
    return { result, streamed, events };
  } finally {
    device.close();
  }
}

/** Stops the server (every session gets closed) and starts a new one on the same port: a restarted replica. */
const restart = (replacements: StartedCloud[]) => async (cloud: StartedCloud) => {
  await cloud.server.stop();
  replacements.push(await serve(cloud.port));
};

test('a device whose cloud restarts mid-generation resumes on the new one with identical greedy output', async () => {
  const replacements: StartedCloud[] = [];
  try {
    const { result, streamed, events } = await generateThrough(restart(replacements), 6, { reconnects: 8 });
    assert.equal(result.error, undefined, String(result.error));
    assert.deepEqual(result.ids, reference);
    assert.deepEqual(streamed, reference, 'every token streamed once, in order');
    assert.equal(result.metrics.reconnects, 1);
    assert.deepEqual(
      events.map((e) => e.kind),
      ['lost', 'resumed'],
    );
    const resumed = events[1] as Extract<ResumeEvent, { kind: 'resumed' }>;
    assert.ok(resumed.replayedRows >= prompt.length + 5, `replayed ${resumed.replayedRows} positions`);
  } finally {
    for (const cloud of replacements) await cloud.server.stop();
  }
});

test('a loss during a chunked prefill resumes too', async () => {
  const replacements: StartedCloud[] = [];
  try {
    // The first token arrives after the whole prompt; stop right then, with later rounds still to come.
    const { result, events } = await generateThrough(restart(replacements), 1, { reconnects: 8, chunk: 4 });
    assert.equal(result.error, undefined, String(result.error));
    assert.deepEqual(result.ids, reference);
    assert.ok(events.some((e) => e.kind === 'resumed'));
  } finally {
    for (const cloud of replacements) await cloud.server.stop();
  }
});

test('when every reconnect fails the generation stops with a NETWORK error and keeps what was streamed', async () => {
  const { result, streamed, events } = await generateThrough((cloud) => cloud.server.stop(), 6, { reconnects: 2 });
  assert.equal(result.error?.code, 'NETWORK');
  assert.deepEqual(result.ids, streamed);
  assert.deepEqual(result.ids, reference.slice(0, result.ids.length));
  assert.ok(result.ids.length >= 6 && result.ids.length < NEW, `kept ${result.ids.length}`);
  assert.deepEqual(
    events.map((e) => e.kind),
    ['lost'],
  );
});

test('the first connection is retried too: a device that starts before its cloud listens reaches it', async () => {
  const probe = await serve();
  const { port } = probe;
  await probe.server.stop();
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
  const events: ResumeEvent[] = [];
  let cloud: Promise<StartedCloud | Error> | undefined;
  try {
    const device = await connectDeviceGenerator({
      parts,
      cloud: { url: `ws://127.0.0.1:${port}`, wire: 'fp32' },
      sampling: GREEDY,
      draftThreshold: new FixedThresholdPolicy(0, 3),
      maxDraft: 3,
      reconnects: 20, // refused attempts fail at once: up to ~30 s of backoff for the cloud to come up
      backoff: { firstMs: 50, maxMs: 2000 },
      onResume: (event) => {
        events.push(event);
        cloud ??= serve(port).catch((error: Error) => error); // the cloud comes up after the first refusal
      },
    });
    try {
      const result = await device.generator.generate(prompt, {
        maxNewTokens: NEW,
        speculative: true,
        parallelDrafting: true,
        chunk: 'off',
      });
      assert.equal(result.error, undefined);
      assert.deepEqual(result.ids, reference);
      const kinds = events.map((e) => e.kind);
      assert.ok(kinds.length >= 1 && kinds.every((kind) => kind === 'retry'), JSON.stringify(kinds));
    } finally {
      device.close();
    }
  } finally {
    const started = await cloud;
    if (started instanceof Error) throw started;
    await started?.server.stop();
  }
});

/** Fake verifiers for the tests of ResumingVerifier alone: a lost link, a result, a session answering `forward`. */
const lost = new HatError('NETWORK', 'the cloud connection closed');
const answer = (rows: number): ForwardResult => ({
  hidden: new Float32Array(rows),
  rows,
  queueMs: 0,
  computeMs: 0,
  latency: { baseMs: 1, perTokenMs: 0.1 },
  roundTripMs: 0,
  bytesUp: 0,
  bytesDown: 0,
});
const verifierOf = (forward: Verifier['forward'], onClose: () => void = () => {}, maxTokensPerFrame = 0): Verifier => ({
  wire: 'fp32',
  maxTokensPerFrame,
  initialLatency: { baseMs: 1, perTokenMs: 0.1 },
  bytesUp: 0,
  bytesDown: 0,
  forward,
  close: onClose,
});

test('a generation that ends while its verifier reconnects opens no new cloud session', async () => {
  const fake = (onClose: () => void = () => {}): Verifier => verifierOf(() => Promise.reject(lost), onClose);
  let opened = 0;
  let closedAfterOpening = 0;
  const verifier: ResumingVerifier = new ResumingVerifier(fake(), {
    reconnects: 3,
    backoff: { firstMs: 50, maxMs: 50 },
    connect: async () => {
      opened++;
      return fake(() => closedAfterOpening++);
    },
    // The request is cancelled as the loss is noticed, before the first backoff ends.
    onEvent: (event) => {
      if (event.kind === 'lost') verifier.close();
    },
  });
  await assert.rejects(verifier.forward(new Float32Array(4), 1, 0, { allPositions: true }));
  // Not one opened (then closed): the close came before the first backoff ended.
  assert.equal(opened, 0, `${opened} cloud sessions opened after the generation ended (${closedAfterOpening} closed)`);
});

test('a generation that ends while a reconnect replays closes that new session and sends it nothing more', async () => {
  // The first session answers the prompt and loses the first verification.
  let calls = 0;
  const first = verifierOf(() => (calls++ === 0 ? Promise.resolve(answer(1)) : Promise.reject(lost)));
  // The replacement's replay is answered only when the test says so; count what it is sent and whether it is closed.
  let sentToReplacement = 0;
  let replacementClosed = false;
  let answerReplay = () => {};
  const replacement = verifierOf(
    (_hidden, nTokens) => {
      sentToReplacement++;
      return new Promise((resolve) => (answerReplay = () => resolve(answer(nTokens))));
    },
    () => (replacementClosed = true),
  );
  const verifier = new ResumingVerifier(first, {
    reconnects: 3,
    backoff: { firstMs: 1, maxMs: 1 },
    connect: async () => replacement,
  });
  await verifier.forward(new Float32Array(8), 8, 0, { allPositions: false, prefill: true });
  const verification = verifier.forward(new Float32Array(2), 2, 8, { allPositions: true });
  await waitFor(() => sentToReplacement === 1, { what: 'the replay to be sent' });
  verifier.close(); // the request's client went away mid-replay
  assert.equal(replacementClosed, true, 'the session opened for the resume was left open');
  answerReplay();
  await assert.rejects(verification, (error: HatError) => error.code === 'NETWORK');
  assert.equal(sentToReplacement, 1, 'the unanswered verification was sent again on the closed session');
});

test("a resume's replayed history says the rows it has left, as a prompt's chunks do (promptRows)", async () => {
  // The first session answers an 8-row prompt and loses the verification after it.
  let calls = 0;
  const first = verifierOf(() => (calls++ === 0 ? Promise.resolve(answer(1)) : Promise.reject(lost)));
  const sent: Array<{ rows: number; past: number; options: ForwardOptions }> = [];
  const replacement = verifierOf(
    (_hidden, rows, past, options) => {
      sent.push({ rows, past, options });
      return Promise.resolve(answer(rows));
    },
    () => {},
    3, // frames of at most 3 rows: the replay is three chunks
  );
  const verifier = new ResumingVerifier(first, {
    reconnects: 1,
    backoff: { firstMs: 1, maxMs: 1 },
    connect: async () => replacement,
  });
  await verifier.forward(new Float32Array(8), 8, 0, { allPositions: false, prefill: true, promptRows: 8 });
  await verifier.forward(new Float32Array(2), 2, 8, { allPositions: true });
  assert.deepEqual(
    sent.map(({ rows, past, options }) => [rows, past, options.prefill ?? false, options.promptRows]),
    [
      [3, 0, true, 8],
      [3, 3, true, 5],
      [2, 6, true, 2],
      [2, 8, false, undefined],
    ],
  );
  verifier.close();
});

/** A TCP relay to `port` whose connections, once silenced, carry nothing either way and never close (a partition). */
async function silenceableRelay(port: number) {
  const links: Array<{ silent: boolean; sockets: Socket[] }> = [];
  const relay = createServer((device) => {
    const upstream = tcpConnect(port, '127.0.0.1');
    const link = { silent: false, sockets: [device, upstream] };
    links.push(link);
    device.on('data', (data) => link.silent || upstream.write(data));
    upstream.on('data', (data) => link.silent || device.write(data));
    for (const socket of link.sockets) {
      socket.on('error', () => {});
      socket.on('close', () => link.silent || link.sockets.forEach((s) => s.destroy()));
    }
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as AddressInfo).port,
    silence: () => links.forEach((link) => (link.silent = true)),
    close: () => {
      links.forEach((link) => link.sockets.forEach((socket) => socket.destroy()));
      relay.close();
    },
  };
}

test('a link that goes silent (no FIN, no RST) is noticed within three keepalives and resumed from', async () => {
  const cloud = await serveSplit(split, { maxSessions: 4, maxContext: 256, keepaliveMs: 100 });
  const relay = await silenceableRelay(cloud.port);
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
  const events: ResumeEvent[] = [];
  const device = await connectDeviceGenerator({
    parts,
    cloud: { url: `ws://127.0.0.1:${relay.port}`, wire: 'fp32' },
    sampling: GREEDY,
    draftThreshold: new FixedThresholdPolicy(0, 3),
    maxDraft: 3,
    reconnects: 3,
    backoff: { firstMs: 50, maxMs: 500 },
    onResume: (event) => events.push(event),
  });
  try {
    let silenced = false;
    const result = await withinDeadline(
      device.generator.generate(prompt, {
        maxNewTokens: NEW,
        speculative: true,
        parallelDrafting: false,
        chunk: 'off',
        onTokens: (ids) => {
          if (!silenced && ids.length > 0) relay.silence();
          silenced = true;
        },
      }),
      { what: 'the generation to notice the silent link', timeoutMs: 30_000 },
    );
    assert.equal(result.error, undefined, String(result.error));
    assert.deepEqual(result.ids, reference);
    assert.deepEqual(
      events.map((event) => event.kind),
      ['lost', 'resumed'],
    );
    const lost = events[0];
    assert.match(lost.kind === 'lost' ? lost.error.message : '', /nothing from the cloud for 300 ms/);
  } finally {
    device.close();
    relay.close();
    await cloud.server.stop();
  }
});
