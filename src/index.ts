// The library's public surface.
export type { Backend, Tensor, DType } from './backends/backend.ts';
export { createBackend } from './backends/index.ts';
export { ReferenceBackend } from './backends/reference/index.ts';
export * from './config/index.ts';
export * from './errors.ts';
export { TnlModel, type ModelState } from './model/transnormer.ts';
export { loadModel, saveModel } from './model/pretrained.ts';
export { generateTokens, prefillChunked, StopMatcher, type GenerateOptions } from './generate/generate.ts';
export { Decoder, type DecoderOptions } from './generate/decoder.ts';
export { DeviceLoop, deviceSamplingApplies, type DeviceLoopOptions, type StepPicks } from './generate/device-loop.ts';
export { Sampler, type SamplingOptions } from './generate/sampling.ts';
export { loadTokenizer, StreamDecoder } from './tokenizer/index.ts';
export type { Tokenizer } from './tokenizer/types.ts';
export { trainBpe } from './tokenizer/train-bpe.ts';
export { train, DEFAULT_SETTINGS, type TrainSettings } from './train/trainer.ts';
export { openCheckpoint, writeModelFolder } from './io/checkpoint.ts';
export { SafetensorsFile, writeSafetensors } from './io/safetensors.ts';
