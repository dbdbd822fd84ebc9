/**
 * How surfaces are let go of when nobody closes them, and who holds the
 * received ones: where a surface came from ({@link SurfaceOrigin}), what its
 * `close()` or finaliser releases ({@link SurfaceOwner}), one
 * `FinalizationRegistry` per origin with the warning for a surface dropped
 * without `close()`, and the count of received frames open in this process
 * (which a pool reads to tell "held here" from "held by another process").
 * `surface.ts` keeps the `Surface` class, which registers and closes.
 *
 * @module
 */

import type { SurfaceBacking } from "../contract/backend.ts";

/**
 * Where a surface came from, for the warning about surfaces dropped without
 * `close()` and for a pool's account of who holds its surfaces. `adopted`:
 * a frame made per buffer of another program (GStreamer's memfds, from-gst),
 * registered as a received frame is but kept out of that account (no pool
 * of this process holds those memfds; their count per inode cost ~190 B per
 * frame over GStreamer's hundreds of memfds).
 * @ignore
 */
export type SurfaceOrigin = "created" | "pool" | "received" | "adopted";

/**
 * What a surface's `close()` or finaliser lets go of: the backing itself, or
 * the pool entry that hands it back to its pool (which names its `backing`).
 * Called at most once per surface (close() unregisters the finaliser). An
 * object made once per backing or pool entry, not a closure per surface: it
 * is also the finaliser's held value, so registering a surface allocates
 * nothing but V8's own cell.
 * @ignore
 */
export type SurfaceOwner = SurfaceBacking | { readonly backing: SurfaceBacking; release(): void };

function ownedBacking(owner: SurfaceOwner): SurfaceBacking {
  return "backing" in owner ? owner.backing : owner;
}

let warnedAboutDrop = false;

/**
 * Frames and pooled surfaces hold a use of the producer's surface until
 * closed. One dropped without `close()` keeps the producer's pool short until
 * V8 happens to collect it — a stall that is hard to trace back, so it is
 * named once per process (as Electron does for unreleased shared textures).
 */
function dropped(owner: SurfaceOwner, origin: SurfaceOrigin): void {
  const backing = ownedBacking(owner);
  if (origin === "received") noteReceivedClosed(backing.id);
  owner.release();
  if (warnedAboutDrop) return;
  warnedAboutDrop = true;
  const { geometry, id } = backing;
  const what = origin === "received"
    ? "a received Frame"
    : origin === "adopted"
    ? "a Surface adopted from another program (from-gst)"
    : origin === "pool"
    ? "a Surface from SurfacePool.acquire()"
    : "a Surface";
  console.warn(
    `surfaceport: ${what} (${geometry.format} ${geometry.width}x${geometry.height}, id ${id}) ` +
      "was garbage-collected without close(). Until then it kept the producer's surface in use, " +
      "so its pool could not reuse it. Close every frame and pooled surface (or declare it with " +
      "`using`). This warning is shown once.",
  );
}

/**
 * One registry per origin, so that the held value can be the owner itself.
 *
 * Received (and adopted) frames register without an unregister token, and `close()`
 * leaves their registration: registering with a token and unregistering
 * it at `close()` cost ~52 B per frame (V8's bookkeeping of the token; a
 * token never unregistered costs ~7 B), a fifth of a frame's whole budget
 * (issue 20). Their owner is always their backing, which knows whether it
 * was released: the callback of a frame closed before it was collected
 * does nothing. Created and pooled surfaces, made far less often, keep the
 * token (a pool entry's owner is reused by the next surface of the entry).
 */
export const finalizers: Record<SurfaceOrigin, FinalizationRegistry<SurfaceOwner>> = {
  created: new FinalizationRegistry((owner) => dropped(owner, "created")),
  pool: new FinalizationRegistry((owner) => dropped(owner, "pool")),
  received: new FinalizationRegistry((owner) => {
    if (!(owner as SurfaceBacking).released) dropped(owner, "received");
  }),
  adopted: new FinalizationRegistry((owner) => {
    if (!(owner as SurfaceBacking).released) dropped(owner, "adopted");
  }),
};

/**
 * Surfaces received by this process and not yet closed, by id: lets a pool
 * in this same process tell "held by a frame open here" from "held by
 * another process". A count that drops to 0 stays in the map (deleting and
 * re-adding an id per frame made V8 shrink and regrow the table); zeros are
 * swept once the map grows past {@link OPEN_RECEIVED_SWEEP}.
 */
const openReceived = new Map<number, number>();
const OPEN_RECEIVED_SWEEP = 256;

/** Internal: counts a frame of surface `id` received by this process (a Surface made for it). */
export function noteReceivedOpen(id: number): void {
  if (openReceived.size >= OPEN_RECEIVED_SWEEP && !openReceived.has(id)) {
    for (const [key, count] of openReceived) if (count === 0) openReceived.delete(key);
  }
  openReceived.set(id, (openReceived.get(id) ?? 0) + 1);
}

/** Internal: counts a received frame of surface `id` closed (or finalised). */
export function noteReceivedClosed(id: number): void {
  const count = openReceived.get(id);
  if (count !== undefined && count > 0) openReceived.set(id, count - 1);
}

/** Internal: how many frames received by this process show surface `id` and are open. */
export function openReceivedCount(id: number): number {
  return openReceived.get(id) ?? 0;
}
