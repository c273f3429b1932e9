// The NcclDevice of the CUDA backend: device addresses of its tensors, its compute stream (so
// collectives are ordered with its kernels), a scratch buffer from its allocator for host-value
// reductions, and its stream-ordered copies. Select the GPU of a rank before creating the backend
// (TNL_CUDA_DEVICE = the launcher's TNL_LOCAL_RANK).
import type { Tensor } from '../backends/backend.ts';
import { CudaTensor, type CudaBackend } from '../backends/cuda/index.ts';
import { ShapeError } from '../errors.ts';
import type { NcclDevice } from './nccl.ts';

export function ncclDeviceFor(be: CudaBackend): NcclDevice {
  const drv = be.drv;
  let scratch: CudaTensor | null = null;
  return {
    pointer(t: Tensor): number {
      if (!(t instanceof CudaTensor)) throw new ShapeError('NCCL collectives need CUDA tensors (of the backend this communicator was made for)');
      return t.ptr;
    },
    stream: drv.stream,
    scratch(bytes: number): number {
      if (!scratch || scratch.bytes < bytes) scratch = be.empty([Math.ceil(bytes / 4)]) as CudaTensor;
      return scratch.ptr;
    },
    toDevice(dst, src) { drv.htod(Number(dst), src); },
    toHost(dst, src) { drv.dtoh(dst, Number(src)); },
    synchronize() { drv.sync(); },
  };
}
