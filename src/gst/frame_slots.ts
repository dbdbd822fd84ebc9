/**
 * Linux only: the frames the to-gst bridge's `unixfdsrc` clients hold, in
 * reused slots (at most `maxOutstanding` in use), and which clients hold
 * each. A frame is closed (or its copy given back to the copy pool) once
 * every client it went to sent RELEASE_BUFFER for it or disconnected; only
 * a frame that some client got counts as released. No object per frame.
 *
 * @module
 */

import type { LayoutCopy } from "./layout_copy.ts";
import type { UnixFdConnection } from "./unixfd_connection.ts";

/** The frame as the bridge got it: what {@link FrameSlots} closes. */
export interface ClosableFrame {
  /** Closes the frame. */
  close(): void;
}

/** One frame GStreamer may hold: a slot, reused (`id` 0 when free). */
export interface Outstanding {
  /** The NEW_BUFFER id, or 0 while the slot is free. */
  id: number;
  /** The frame to close once every client let go (zero-copy), or undefined. */
  frame: ClosableFrame | undefined;
  /** The copy to give back to the copy pool once every client let go, or undefined. */
  copy: LayoutCopy | undefined;
  /** The frame's timestamp, for the release callback. */
  timestamp: number | undefined;
  /** The clients that hold it (sent, not released). */
  readonly pending: UnixFdConnection[];
  /** True once a client got it: only then does its settling count as a release. */
  delivered: boolean;
  /** True while its clients are being served: it does not settle then. */
  sending: boolean;
}

/** The slots of the frames out with clients. */
export class FrameSlots {
  readonly #slots: Outstanding[] = [];
  #count = 0;
  readonly #onReleased: (timestamp: number | undefined) => void;

  /** Slots calling `onReleased` with a frame's timestamp when every client that got it let go. */
  constructor(onReleased: (timestamp: number | undefined) => void) {
    this.#onReleased = onReleased;
  }

  /** Frames out right now. */
  get count(): number {
    return this.#count;
  }

  /** Takes a free slot for frame `id`. */
  take(id: number, timestamp: number | undefined): Outstanding {
    // Indexed loops: a for-of's iterator cost ~50 B per call here (sampled).
    let entry: Outstanding | undefined;
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) {
      if (slots[i].id === 0) {
        entry = slots[i];
        break;
      }
    }
    if (!entry) {
      entry = {
        id: 0,
        frame: undefined,
        copy: undefined,
        timestamp: undefined,
        pending: [],
        delivered: false,
        sending: false,
      };
      this.#slots.push(entry);
    }
    entry.id = id;
    entry.timestamp = timestamp;
    entry.delivered = false;
    this.#count++;
    return entry;
  }

  /** The slot of frame `id`, if it is out. */
  find(id: number): Outstanding | undefined {
    if (id <= 0) return undefined;
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) if (slots[i].id === id) return slots[i];
    return undefined;
  }

  /** `client` gave `entry` back (it holds it: see {@link Outstanding.pending}). */
  release(entry: Outstanding, client: UnixFdConnection): void {
    if (removeClient(entry.pending, client)) this.settle(entry);
  }

  /** `client` went away: every frame it held is given back for it. */
  dropClient(client: UnixFdConnection): void {
    for (const entry of this.#slots) {
      if (entry.id !== 0 && removeClient(entry.pending, client)) this.settle(entry);
    }
  }

  /** Frees `entry`'s slot once no client holds it, closing its frame (or freeing its copy). */
  settle(entry: Outstanding): void {
    if (entry.pending.length > 0 || entry.id === 0 || entry.sending) return;
    entry.id = 0;
    this.#count--;
    const { frame, copy } = entry;
    entry.frame = undefined;
    entry.copy = undefined;
    frame?.close();
    if (copy) copy.busy = false;
    if (entry.delivered) this.#onReleased(entry.timestamp);
  }

  /** Closes every frame still out, none counted as released (the bridge is closing). */
  close(): void {
    for (const entry of this.#slots) {
      if (entry.id === 0) continue;
      entry.pending.length = 0;
      entry.delivered = false;
      entry.sending = false;
      this.settle(entry);
    }
  }
}

/** Removes `client` from `clients` (order does not matter); false if it was not there. */
function removeClient(clients: UnixFdConnection[], client: UnixFdConnection): boolean {
  const at = clients.indexOf(client);
  if (at < 0) return false;
  clients[at] = clients[clients.length - 1];
  clients.pop();
  return true;
}
