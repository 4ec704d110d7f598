/**
 * The adapter-training API that `hat train-adapter` wires to the split parts. Typical flow:
 *   source  = a PairSource over (h_K, h_N, next token) pairs made by the input and middle parts
 *   result  = await trainAttentionAdapter(bufferedSource(source, budget), head, options, reporter)
 *   files   = await exportAdapter(`${dir}/adapter.onnx`, { kind: 'attention', params: result.params, config },
 *                                 { outputName })
 *   sweep   = sweepThresholds(traces, { draftStepMs, verifyMs })   // traces from topTokens on held-out text
 *   manifest.adapter = adapterManifest({ ..., defaultThreshold: sweep.best })
 */
export {
  adapterForward,
  initAdapterParams,
  parameterCount,
  PARAM_NAMES,
  type AdapterParams,
  type AttentionAdapterConfig,
  type InitOptions,
  type SequenceBatch,
} from './attention-adapter.ts';
export { layerAttentionInit, layerAttentionNames } from './init-from-model.ts';
export {
  DEFAULT_LOSS,
  draftLoss,
  topTokens,
  type LossOptions,
  type LossValue,
  type OutputHead,
} from './output-head.ts';
export { arraySource, bufferedSource, collect, teacherSource, type PairBatch, type PairSource } from './pair-source.ts';
export { tokenPairSource, type TokenPairSourceOptions } from './token-pair-source.ts';
export {
  evaluateAdapter,
  trainAttentionAdapter,
  type StepRecord,
  type TrainOptions,
  type TrainResult,
} from './train-attention.ts';
export { DEFAULT_ADAMW, learningRate, type AdamWOptions } from './optimizer.ts';
export { fitLinearAdapter, linearForward, RidgeAccumulator, type LinearAdapter } from './linear-adapter.ts';
export {
  ADAPTER_INPUT,
  ADAPTER_KV,
  attentionAdapterModel,
  exportAdapter,
  linearAdapterModel,
  type AdapterExportOptions,
  type AdapterToExport,
} from './export-onnx.ts';
export { adapterManifest, type AdapterManifestInput } from './manifest-entry.ts';
export {
  DEFAULT_THRESHOLDS,
  msPerToken,
  simulateRounds,
  sweepThresholds,
  top1Agreement,
  type CostModel,
  type DraftTrace,
  type RoundStats,
  type ThresholdSweep,
} from './draft-eval.ts';
export { jsMatMul, type MatMulEngine } from './matmul.ts';
export { createOrtMatMul } from './matmul-ort.ts';
