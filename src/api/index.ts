/**
 * hat as a library (`import { HatDevice, HatCloud, serveOpenAI } from 'hat'`): a device that keeps its parts
 * loaded and streams HAT generations, serve-cloud in-process, and the device's OpenAI-compatible HTTP API.
 * The package exports its TypeScript sources (no build step): run the app through tsx, as bin/hat does.
 */
export { HatDevice } from './hat-device.ts';
export type {
  ChatMessage,
  DeviceMetrics,
  FinishReason,
  GenerateOptions,
  GenerationResult,
  HatDeviceOptions,
  PreparedRequest,
  Prompt,
} from './hat-device.ts';
export { HatCloud, type HatCloudOptions } from './hat-cloud.ts';
export { openAIApp, serveOpenAI, type OpenAIServer, type OpenAIServerOptions } from './openai/server.ts';
export { HatError, isHatError, type ErrorCode } from '../errors.ts';
export type { LinkSpec } from '../runtime/link.ts';
