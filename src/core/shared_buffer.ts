/**
 * The one `ArrayBuffer` over a mapping, shared by every `Surface` over it,
 * for both backends.
 *
 * One per mapping, not one per frame: V8 counts an external buffer's size
 * towards its GC heuristics, and a fresh 33 MB buffer per 4K frame drove
 * back-to-back full collections (measured: p50 from ~0.3 ms to ~10 ms).
 *
 * @module
 */

/** Keeps the owner of a mapping reachable from the one `ArrayBuffer` over it. */
const MAPPING_OWNER = Symbol("surfaceport.mappingOwner");

/**
 * `buffer` (the runtime's `ArrayBuffer` over a mapping, from
 * `runtime.arrayBufferAt`), made to reference `owner`, so GC never finalizes
 * the owner (and unmaps the memory) while a view exists.
 */
export function sharedBuffer(buffer: ArrayBuffer, owner: object): ArrayBuffer {
  Object.defineProperty(buffer, MAPPING_OWNER, { value: owner });
  return buffer;
}

/**
 * Detaches `buffer` (every view of it gets length 0), to be called right
 * before its memory is unmapped, so no view can ever touch unmapped memory.
 * The backing store moves to a dropped clone, which V8 accounts for like any
 * other garbage; `transfer(0)` would leave its size counted as external
 * memory for good.
 */
export function detachBuffer(buffer: ArrayBuffer | undefined): void {
  if (buffer && !buffer.detached) structuredClone(buffer, { transfer: [buffer] });
}
