/**
 * The cloud-only baseline: its server answers a bad request with an error and goes on serving, and the prompt it
 * gets as text is the one the split scenarios get as ids.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { promptsOfLengths, splitTokenizerIfAny } from '../../src/bench/prompts.ts';
import { spawnTextCloud, startTextCloud } from '../../src/bench/text-cloud.ts';
import { HatError, type ErrorData } from '../../src/errors.ts';
import { tmpdir } from 'node:os';
import { readManifest } from '../../src/runtime/split-dir.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { withinDeadline } from '../helpers/wait-for.ts';

/**
 * Sends one request and collects replies until `count` tokens or an error; fails if the connection closes first or
 * the replies have not come within 60 s.
 */
async function ask(url: string, request: object, count: number): Promise<Array<{ token?: number; error?: ErrorData }>> {
  const socket = new WebSocket(url);
  const replies: Array<{ token?: number; error?: ErrorData }> = [];
  try {
    await withinDeadline(
      new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.once('close', () => reject(new Error(`the connection closed after ${replies.length} replies`)));
        socket.once('open', () => socket.send(JSON.stringify(request)));
        socket.on('message', (data: Buffer) => {
          const reply = JSON.parse(data.toString('utf8')) as { token?: number; error?: ErrorData };
          replies.push(reply);
          if (reply.error || replies.length === count) resolve();
        });
      }),
      { what: `${count} replies from the text cloud`, timeoutMs: 60_000 },
    );
  } finally {
    socket.removeAllListeners();
    socket.on('error', () => {});
    socket.terminate();
  }
  return replies;
}

test('a prompt id outside the vocabulary is answered with an error; the next request is served', async () => {
  const cloud = await startTextCloud(join(repoRoot, 'fixtures', 'default-split'), { threads: 1 });
  try {
    const [bad] = await ask(cloud.url, { prompt: [0, 99_999], maxNewTokens: 2 }, 2);
    assert.match(bad.error?.message ?? '', /outside the vocabulary/);
    assert.equal(bad.error?.code, 'BAD_OPTION', 'the code crosses the socket (it was a bare message, then NETWORK)');
    const good = await ask(cloud.url, { prompt: [0, 5, 6], maxNewTokens: 2 }, 2);
    assert.equal(good.filter((r) => typeof r.token === 'number').length, 2);
  } finally {
    await cloud.close();
  }
});

test("the cloud-only server's process keeps its failure's code and hint (they were RUNTIME and none)", async () => {
  await assert.rejects(spawnTextCloud(join(tmpdir(), 'hat-no-such-split')), (error: unknown) => {
    assert.ok(error instanceof HatError);
    assert.equal(error.code, 'BAD_MANIFEST');
    assert.match(error.message, /^the cloud-only server failed to start: .*has no manifest\.json/);
    assert.ok(error.hint, 'with its hint');
    return true;
  });
});

test("every passage prompt's text encodes back to exactly its ids (k ≥ 1 slices used to gain a BOS)", () => {
  const splitDir = join(repoRoot, 'fixtures', 'default-split');
  const tokenizer = splitTokenizerIfAny(splitDir)!;
  const prompts = promptsOfLengths([128, 384], 3, tokenizer, readManifest(splitDir).model?.vocabSize ?? 0);
  assert.deepEqual(
    prompts.map((prompt) => prompt.ids.length),
    [128, 128, 128, 384, 384, 384],
  );
  for (const prompt of prompts) {
    assert.ok(prompt.text !== undefined, prompt.source);
    assert.deepEqual(tokenizer.encode(prompt.text, prompt.textAddsSpecialTokens), prompt.ids, prompt.source);
  }
});
