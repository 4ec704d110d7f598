"""Small byte-level BPE trainer/encoder that writes a Hugging Face `tokenizer.json`.

Debian bookworm has no package for the Hugging Face `tokenizers` library, so this module
re-implements the GPT-2 style byte-level BPE:

* pre-tokenisation: the GPT-2 regex of the `ByteLevel` pre-tokenizer (use_regex=true,
  add_prefix_space=false), then every UTF-8 byte is mapped to a printable unicode char
  (GPT-2 `bytes_to_unicode`);
* training: classic merge loop over word frequencies with incremental pair counts and a
  lazy max-heap (deterministic tie-break: highest count, then lexicographically smallest pair);
* encoding: apply merges by rank (lowest rank first, leftmost first), exactly what the Rust
  crate and `@huggingface/tokenizers` (JS) do.

The `regex` module (python3-regex) is used if available for `\\p{L}`/`\\p{N}`; otherwise the
ASCII equivalent is used and the input is asserted to be ASCII (the KJV corpus is pure ASCII).
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict

try:  # exact GPT-2 pattern
    import regex as _re

    _PAT = _re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    _ASCII_ONLY = False
except ImportError:  # identical on ASCII input
    import re as _re

    _PAT = _re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")
    _ASCII_ONLY = True


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}


def pretokenize(text: str) -> list[str]:
    if _ASCII_ONLY:
        assert text.isascii(), "non-ASCII input needs the `regex` module (apt-get install python3-regex)"
    return ["".join(BYTE_ENC[b] for b in piece.encode("utf-8")) for piece in _PAT.findall(text)]


class ByteLevelBPE:
    def __init__(self, special_tokens: list[str], merges: list[tuple[str, str]]):
        self.special_tokens = list(special_tokens)
        self.merges = list(merges)
        self.vocab: dict[str, int] = {}
        for t in self.special_tokens:
            self.vocab[t] = len(self.vocab)
        for b in range(256):
            self.vocab[BYTE_ENC[b]] = len(self.vocab)
        for a, b in self.merges:
            if a + b not in self.vocab:  # two merges may yield the same string
                self.vocab[a + b] = len(self.vocab)
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts, vocab_size: int, special_tokens: list[str], log=print) -> "ByteLevelBPE":
        word_freq: Counter[str] = Counter()
        for t in texts:
            word_freq.update(pretokenize(t))
        words = [list(w) for w in word_freq]
        freqs = [word_freq[w] for w in word_freq]
        pair_counts: dict[tuple[str, str], int] = defaultdict(int)
        where: dict[tuple[str, str], set[int]] = defaultdict(set)
        for i, w in enumerate(words):
            f = freqs[i]
            for p in zip(w, w[1:]):
                pair_counts[p] += f
                where[p].add(i)
        heap = [(-c, p) for p, c in pair_counts.items()]
        heapq.heapify(heap)
        n_new = vocab_size - len(special_tokens) - 256
        merges: list[tuple[str, str]] = []
        new_tokens: set[str] = set()
        while len(new_tokens) < n_new and heap:
            negc, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -negc or negc == 0:
                continue  # stale heap entry
            merges.append(pair)
            a, b = pair
            merged = a + b
            new_tokens.add(merged)
            touched: set[tuple[str, str]] = set()
            for i in list(where[pair]):
                w = words[i]
                if len(w) < 2:
                    continue
                # merge left to right (non-overlapping)
                new = []
                j = 0
                changed = False
                while j < len(w):
                    if j < len(w) - 1 and w[j] == a and w[j + 1] == b:
                        new.append(merged)
                        j += 2
                        changed = True
                    else:
                        new.append(w[j])
                        j += 1
                if not changed:
                    continue
                f = freqs[i]
                for p in zip(w, w[1:]):
                    pair_counts[p] -= f
                    touched.add(p)
                for p in zip(new, new[1:]):
                    pair_counts[p] += f
                    where[p].add(i)
                    touched.add(p)
                words[i] = new
            del where[pair]
            pair_counts.pop(pair, None)
            for p in touched:
                c = pair_counts.get(p, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                elif p in pair_counts:
                    del pair_counts[p]
            if len(merges) % 500 == 0:
                log(f"  bpe: {len(merges)} merges, {len(new_tokens)}/{n_new} new tokens, last {merged!r} x{-negc}")
        return cls(special_tokens, merges)

    # ------------------------------------------------------------------ encoding
    def _bpe(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        syms = list(word)
        while len(syms) > 1:
            best = None
            best_rank = None
            for p in zip(syms, syms[1:]):
                r = self.ranks.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = p, r
            if best is None:
                break
            a, b = best
            new = []
            j = 0
            while j < len(syms):
                if j < len(syms) - 1 and syms[j] == a and syms[j + 1] == b:
                    new.append(a + b)
                    j += 2
                else:
                    new.append(syms[j])
                    j += 1
            syms = new
        ids = [self.vocab[s] for s in syms]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Encode plain text (no special-token parsing, no BOS/EOS added)."""
        out: list[int] = []
        for w in pretokenize(text):
            out.extend(self._bpe(w))
        return out

    def decode(self, ids) -> str:
        parts: list[str] = []
        buf: list[int] = []
        for i in ids:
            t = self.id_to_token[int(i)]
            if t in self.special_tokens:
                if buf:
                    parts.append(bytes(buf).decode("utf-8", errors="replace"))
                    buf = []
                parts.append(t)
            else:
                buf.extend(BYTE_DEC[c] for c in t)
        if buf:
            parts.append(bytes(buf).decode("utf-8", errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ HF format
    def to_hf_json(self) -> dict:
        bos = self.special_tokens[0]
        added = [
            {
                "id": self.vocab[t],
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t in self.special_tokens
        ]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            # Like Llama's tokenizers: encoding with special tokens prepends BOS, as every training verse began.
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [self.vocab[bos]], "tokens": [bos]}},
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> "ByteLevelBPE":
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        specials = [t["content"] for t in sorted(j["added_tokens"], key=lambda t: t["id"])]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        tok = cls(specials, merges)
        assert tok.vocab == j["model"]["vocab"], "vocab mismatch on reload"
        return tok
