/**
 * Chat templates: the `chat_template` a model's tokenizer_config.json carries (a Jinja template, as Hugging Face
 * transformers renders it in `apply_chat_template`), rendered with @huggingface/jinja — the implementation
 * transformers.js uses. The template sees `messages`, `add_generation_prompt` and the special tokens the
 * tokenizer config names (`bos_token`, `eos_token`, …, as strings); its output is tokenized without adding
 * special tokens again (the template writes them itself), as transformers does.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { HatError } from '../errors.ts';
import { readJsonFile } from '../json-file.ts';

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

export interface ChatTemplate {
  /** The Jinja source, as tokenizer_config.json has it. */
  readonly source: string;
  /** The prompt text for `messages`; `addGenerationPrompt` opens the assistant's turn (default true). */
  render(messages: readonly ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];

/** A special token named in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** `chat_template` is a string, or a list of named templates ({name, template}) of which 'default' is used. */
function templateSource(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.filter(
      (t): t is { name: string; template: string } =>
        Boolean(t) && typeof t.name === 'string' && typeof t.template === 'string',
    );
    return (named.find((t) => t.name === 'default') ?? named[0])?.template;
  }
  return undefined;
}

/** Compiles a template; `specialTokens` maps bos_token etc. to their text. */
export function chatTemplate(
  source: string,
  specialTokens: Record<string, string> = {},
  label = 'chat_template',
): ChatTemplate {
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${label} is not a template @huggingface/jinja can parse (${(error as Error).message})`,
      'fix or remove chat_template in tokenizer_config.json',
    );
  }
  return {
    source,
    render(messages, options = {}) {
      try {
        return template.render({
          ...specialTokens,
          messages: messages.map((m) => ({ ...m })),
          add_generation_prompt: options.addGenerationPrompt ?? true,
        });
      } catch (error) {
        // Templates refuse conversations they do not support through raise_exception (e.g. roles out of order).
        throw new HatError(
          'BAD_OPTION',
          `the chat template cannot render these messages: ${(error as Error).message}`,
          "send the roles and order this model's template accepts",
        );
      }
    },
  };
}

/**
 * The chat template in `dir`/tokenizer_config.json (a split directory or device bundle gets it from beside the
 * source model: `hat split` copies that file), or undefined when the model has none.
 */
export function loadChatTemplate(dir: string): ChatTemplate | undefined {
  const path = join(dir, 'tokenizer_config.json');
  if (!existsSync(path)) return undefined;
  const config = readJsonFile(path, 'the tokenizer config');
  const source = templateSource(config.chat_template);
  if (source === undefined) return undefined;
  const specialTokens: Record<string, string> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const text = tokenText(config[key]);
    if (text !== undefined) specialTokens[key] = text;
  }
  return chatTemplate(source, specialTokens, `${path}: chat_template`);
}
