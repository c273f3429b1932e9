// Token embedding: x = scale · E[id] (scale = sqrt(D) unless no_scale_embedding). The padding row
// gets no gradient from the lookup (nn.Embedding's padding_idx); a tied head still gives it one.
import type { Backend, Tensor } from '../backends/backend.ts';

export function embeddingForward(be: Backend, x: Tensor, table: Tensor, ids: Int32Array, scale: number): void {
  be.embedding(x, table, ids, scale);
}

export function embeddingBackward(be: Backend, dTable: Tensor, dx: Tensor, ids: Int32Array, scale: number, paddingIdx: number): void {
  be.embeddingBackward(dTable, dx, ids, scale, paddingIdx);
}
