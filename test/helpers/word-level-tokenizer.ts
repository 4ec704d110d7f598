/** A word-level tokenizer.json (whitespace pre-tokenizer, id = the vocabulary's value): the smallest real tokenizer. */
export function wordLevelTokenizerJson(vocab: Record<string, number>, unkToken: string): Record<string, unknown> {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: unkToken },
  };
}
