// The few CUDA driver calls the NCCL test needs (device memory, a stream, copies), through koffi:
// a stand-in for the CUDA backend's NcclDevice while that backend is written elsewhere.
import { createRequire } from 'node:module';
import type { DType, Tensor } from '../../../src/backends/backend.ts';
import type { NcclDevice } from '../../../src/parallel/nccl.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...a: any[]) => number;

export interface MiniDevice extends NcclDevice {
  tensor(data: Float32Array | Uint16Array, dtype?: DType): Tensor & { ptr: bigint };
  read(t: Tensor): Float32Array | Uint16Array;
}

export function cudaDevice(ordinal = 0): MiniDevice {
  const m = createRequire(import.meta.url)('koffi');
  const koffi = m.default ?? m;
  const lib = koffi.load(process.env.TNL_LIBCUDA ?? 'libcuda.so.1');
  const f = (n: string, a: string[]): Fn => lib.func(n, 'int', a);
  const cu = {
    init: f('cuInit', ['uint32_t']), deviceGet: f('cuDeviceGet', ['void *', 'int']),
    retain: f('cuDevicePrimaryCtxRetain', ['void *', 'int']), setCurrent: f('cuCtxSetCurrent', ['uint64_t']),
    alloc: f('cuMemAlloc_v2', ['void *', 'size_t']), h2d: f('cuMemcpyHtoDAsync_v2', ['uint64_t', 'void *', 'size_t', 'uint64_t']),
    d2h: f('cuMemcpyDtoHAsync_v2', ['void *', 'uint64_t', 'size_t', 'uint64_t']), streamCreate: f('cuStreamCreate', ['void *', 'uint32_t']),
    sync: f('cuStreamSynchronize', ['uint64_t']),
  };
  const ok = (what: string, r: number) => { if (r !== 0) throw new Error(`${what} failed: CUresult ${r}`); };
  ok('cuInit', cu.init(0));
  const dev = new Int32Array(1), ctx = new BigUint64Array(1), st = new BigUint64Array(1);
  ok('cuDeviceGet', cu.deviceGet(dev, ordinal));
  ok('cuDevicePrimaryCtxRetain', cu.retain(ctx, dev[0]));
  ok('cuCtxSetCurrent', cu.setCurrent(ctx[0]));
  ok('cuStreamCreate', cu.streamCreate(st, 0));
  const stream = st[0]!;
  const alloc = (bytes: number) => { const p = new BigUint64Array(1); ok('cuMemAlloc', cu.alloc(p, Math.max(bytes, 8))); return p[0]!; };
  let scratch = 0n, scratchBytes = 0;
  const d: MiniDevice = {
    stream,
    pointer: (t) => (t as unknown as { ptr: bigint }).ptr,
    scratch(bytes) { if (bytes > scratchBytes) { scratch = alloc(bytes); scratchBytes = bytes; } return scratch; },
    toDevice(dst, src) { ok('cuMemcpyHtoD', cu.h2d(BigInt(dst), src, src.byteLength, stream)); },
    toHost(dst, src) { ok('cuMemcpyDtoH', cu.d2h(dst, BigInt(src), dst.byteLength, stream)); ok('cuStreamSynchronize', cu.sync(stream)); },
    synchronize() { ok('cuStreamSynchronize', cu.sync(stream)); },
    tensor(data, dtype = data instanceof Uint16Array ? 'bf16' : 'f32') {
      const ptr = alloc(data.byteLength);
      d.toDevice(ptr, data);
      return { shape: [data.length], dtype, size: data.length, ptr };
    },
    read(t) {
      const out = t.dtype === 'bf16' ? new Uint16Array(t.size) : new Float32Array(t.size);
      d.toHost(out, d.pointer(t));
      return out;
    },
  };
  return d;
}
