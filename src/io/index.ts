// Public surface of src/io: weight files (safetensors, PyTorch .bin), model folders, dtypes, atomic writes.
export * from './dtype.ts';
export * from './reader.ts';
export { SafetensorsFile, writeSafetensors, type TensorToWrite, type TensorsToWrite } from './safetensors.ts';
export { PytorchCheckpoint } from './pytorch.ts';
export { openCheckpoint, openWeightFile, openSharded, ShardedReader, readJson, writeModelFolder, WEIGHT_FILES, type ModelFolderContent } from './checkpoint.ts';
export { writeFileAtomic, writeFileAtomicStream, replaceDirAtomic } from './atomic.ts';
