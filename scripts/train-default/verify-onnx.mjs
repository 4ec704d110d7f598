// Throwaway verification of fixtures/default against the PyTorch reference written by train.py.
// Run from the repo root so node resolves ./node_modules:
//   node scripts/train-default/verify-onnx.mjs [fixtures/default] [/tmp/hat-train-default/refs.json]
// Checks:
//   tokenizer  @huggingface/tokenizers encode == Python BPE ids on held-out verses; decode round trip
//   (a)        10-token prefill from an empty past (past dims [1,kv,0,hd]) vs PyTorch logits, max |diff| < 1e-4
//   (b)        7-token prefill + 3-token step on the non-empty cache == the 10-token prefill's last 3 logits
//   (c)        greedy continuation by token-by-token ONNX decoding == PyTorch greedy (40 tokens, 5 prompts)
//   (d)        batch 2, left-padded, 2 decode steps == each row run alone
// Prints the ONNX greedy continuations (decoded with the JS tokenizer) for fixtures/README.md.
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';

const dir = process.argv[2] ?? 'fixtures/default';
const refsPath = process.argv[3] ?? '/tmp/hat-train-default/refs.json';
const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
const refs = JSON.parse(fs.readFileSync(refsPath, 'utf8'));
const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), {
  clean_up_tokenization_spaces: false,
});
const L = cfg.num_hidden_layers,
  KV = cfg.num_key_value_heads,
  HD = cfg.head_dim,
  V = cfg.vocab_size;
let failures = 0;
const check = (name, ok, detail) => {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  if (!ok) failures++;
};

// ---------------------------------------------------------------- tokenizer
{
  let same = 0,
    rt = 0;
  const bad = [];
  for (const c of refs.tokenizer_cases) {
    // The tokenizer prepends <|bos|> (TemplateProcessing); the Python references are the text's own ids.
    const ids = tok.encode(c.text, { add_special_tokens: false }).ids;
    if (JSON.stringify(ids) === JSON.stringify(c.ids)) same++;
    else bad.push(c.text);
    if (tok.decode(ids) === c.text) rt++;
  }
  const n = refs.tokenizer_cases.length;
  check(
    'tokenizer JS==Python ids',
    same === n,
    `${same}/${n} held-out verses identical${bad.length ? '; first mismatch: ' + bad[0] : ''}`,
  );
  check('tokenizer JS decode round trip', rt === n, `${rt}/${n}`);
  const bos = tok.token_to_id('<|bos|>'),
    eos = tok.token_to_id('<|eos|>');
  check('special tokens', bos === cfg.bos_token_id && eos === cfg.eos_token_id, `<|bos|>=${bos} <|eos|>=${eos}`);
}

// ---------------------------------------------------------------- onnx helpers
const sess = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), { intraOpNumThreads: 2 });
console.log('inputs', JSON.stringify(sess.inputMetadata.map((m) => [m.name, m.type, m.shape]).slice(0, 5)));
console.log('outputs', JSON.stringify(sess.outputMetadata.map((m) => [m.name, m.type, m.shape]).slice(0, 3)));

const i64 = (arr, dims) => new ort.Tensor('int64', BigInt64Array.from(arr.map(BigInt)), dims);
const emptyPast = (B = 1) => {
  const p = {};
  for (let i = 0; i < L; i++)
    for (const kv of ['key', 'value'])
      p[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [B, KV, 0, HD]);
  return p;
};
// one step: ids [B][S], mask [B][P+S], pos [B][S]
async function step(ids, mask, pos, past) {
  const B = ids.length,
    S = ids[0].length;
  const feeds = {
    input_ids: i64(ids.flat(), [B, S]),
    attention_mask: i64(mask.flat(), [B, mask[0].length]),
    position_ids: i64(pos.flat(), [B, S]),
    ...past,
  };
  const out = await sess.run(feeds);
  const next = {};
  for (let i = 0; i < L; i++)
    for (const kv of ['key', 'value']) next[`past_key_values.${i}.${kv}`] = out[`present.${i}.${kv}`];
  return { logits: out.logits, past: next };
}
const row = (logits, b, s) => {
  const [, S, VV] = logits.dims;
  return logits.data.subarray((b * S + s) * VV, (b * S + s + 1) * VV);
};
const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
const argmax = (a) => a.reduce((bi, x, i) => (x > a[bi] ? i : bi), 0);
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

// ---------------------------------------------------------------- (a) prefill 10 vs torch
const ids10 = refs.prefill10.ids;
const full = await step([ids10], [ids10.map(() => 1)], [range(0, 10)], emptyPast());
{
  let m = 0;
  for (let s = 0; s < 10; s++) m = Math.max(m, maxDiff(row(full.logits, 0, s), refs.prefill10.logits[s]));
  check(
    '(a) 10-token prefill, empty past, vs PyTorch',
    m < 1e-4,
    `max |diff| = ${m.toExponential(2)} over [10, ${V}] logits`,
  );
}

// ---------------------------------------------------------------- (b) 7 + 3 vs 10
{
  const a = await step([ids10.slice(0, 7)], [Array(7).fill(1)], [range(0, 7)], emptyPast());
  const b = await step([ids10.slice(7)], [Array(10).fill(1)], [range(7, 10)], a.past);
  let m = 0,
    mt = 0;
  for (let s = 0; s < 3; s++) {
    m = Math.max(m, maxDiff(row(b.logits, 0, s), row(full.logits, 0, 7 + s)));
    mt = Math.max(mt, maxDiff(row(b.logits, 0, s), refs.prefill10.logits[7 + s]));
  }
  const pk = b.past['past_key_values.0.key'].dims;
  check(
    '(b) 7-token prefill + 3-token step on cache == 10-token prefill',
    m < 1e-4,
    `max |diff| = ${m.toExponential(2)} (vs PyTorch ${mt.toExponential(2)}); present dims ${JSON.stringify(pk)}`,
  );
}

// ---------------------------------------------------------------- (c) greedy == torch greedy
async function greedy(ids, n) {
  let past = emptyPast();
  let cur = ids,
    plen = 0;
  const out = [];
  for (let t = 0; t < n; t++) {
    const S = cur.length;
    const r = await step([cur], [Array(plen + S).fill(1)], [range(plen, plen + S)], past);
    const nxt = argmax(row(r.logits, 0, S - 1));
    out.push(nxt);
    past = r.past;
    plen += S;
    cur = [nxt];
  }
  return out;
}
const continuations = [];
{
  let same = 0;
  for (const p of refs.prompts) {
    const g = await greedy(p.ids, p.torch_greedy.length);
    const ok = JSON.stringify(g) === JSON.stringify(p.torch_greedy);
    if (ok) same++;
    else console.log('  mismatch:', p.text, g, p.torch_greedy);
    continuations.push({ prompt: p.text, ids: g, text: tok.decode(g) });
  }
  check(
    '(c) ONNX token-by-token greedy == PyTorch greedy',
    same === refs.prompts.length,
    `${same}/${refs.prompts.length} prompts, ${refs.prompts[0].torch_greedy.length} tokens each`,
  );
}

// ---------------------------------------------------------------- (d) batch 2 with left padding
{
  const A = refs.prompts[0].ids,
    Bp = refs.prompts[1].ids;
  const T = Math.max(A.length, Bp.length);
  const pad = (x) => [...Array(T - x.length).fill(cfg.eos_token_id), ...x];
  const m0 = (x) => [...Array(T - x.length).fill(0), ...x.map(() => 1)];
  const posOf = (m) => {
    let c = 0;
    return m.map((v) => (v ? c++ : 1));
  }; // cumsum(mask)-1, 1 where masked
  let mask = [m0(A), m0(Bp)];
  let r = await step([pad(A), pad(Bp)], mask, mask.map(posOf), emptyPast(2));
  const nextA = [A.length],
    nextB = [Bp.length];
  let m = 0;
  const alone = [
    await step([A], [A.map(() => 1)], [range(0, A.length)], emptyPast()),
    await step([Bp], [Bp.map(() => 1)], [range(0, Bp.length)], emptyPast()),
  ];
  m = Math.max(m, maxDiff(row(r.logits, 0, T - 1), row(alone[0].logits, 0, A.length - 1)));
  m = Math.max(m, maxDiff(row(r.logits, 1, T - 1), row(alone[1].logits, 0, Bp.length - 1)));
  // two decode steps with a fixed token each
  let pastB = r.past,
    pa = [alone[0].past, alone[1].past];
  for (let t = 0; t < 2; t++) {
    const tokA = 5 + t,
      tokB = 9 + t;
    mask = mask.map((x) => [...x, 1]);
    r = await step([[tokA], [tokB]], mask, [[nextA[0] + t], [nextB[0] + t]], pastB);
    pastB = r.past;
    const ra = await step([[tokA]], [Array(A.length + t + 1).fill(1)], [[A.length + t]], pa[0]);
    const rb = await step([[tokB]], [Array(Bp.length + t + 1).fill(1)], [[Bp.length + t]], pa[1]);
    pa = [ra.past, rb.past];
    m = Math.max(
      m,
      maxDiff(row(r.logits, 0, 0), row(ra.logits, 0, 0)),
      maxDiff(row(r.logits, 1, 0), row(rb.logits, 0, 0)),
    );
  }
  check('(d) batch 2, left-padded prefill + 2 steps == rows alone', m < 1e-4, `max |diff| = ${m.toExponential(2)}`);
}

console.log('\nONNX greedy continuations (40 tokens, prompt = <|bos|> + text):');
for (const c of continuations) console.log(JSON.stringify({ prompt: c.prompt, continuation: c.text }));
if (process.env.CONT_OUT) fs.writeFileSync(process.env.CONT_OUT, JSON.stringify(continuations, null, 1));
console.log(failures ? `\n${failures} check(s) FAILED` : '\nall checks passed');
process.exit(failures ? 1 : 0);
