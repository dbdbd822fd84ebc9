/**
 * Linux only: what the from-gst bridge (`from_gst.ts`) is given and gives:
 * the sink it hands surfaces to, the meta it sends with each, its options
 * and its counters.
 *
 * @module
 */

import type { PeerCredentials } from "../core/errors.ts";
import type { Surface } from "../surface/surface.ts";
import { bufferNumberOrNull } from "./decode.ts";
import type { GstNewBuffer } from "./protocol.ts";

/** Where the from-gst bridge hands its surfaces: a `Publisher`, a `Channel`, or anything with `send`. */
export interface SurfaceSink<M = unknown> {
  /** Hands `surface` on; resolves once it was handed over (the caller's surface stays open). */
  send(surface: Surface, meta?: M): Promise<void>;
}

/** The metadata the from-gst bridge sends with each frame (GStreamer's buffer fields). */
export interface GstFrameMeta {
  /** Presentation time in ns on the GStreamer host's `CLOCK_MONOTONIC`, or null. */
  pts: number | null;
  /** Duration in ns, or null. */
  duration: number | null;
  /** GStreamer's buffer offset (for video, the frame number), or null. */
  offset: number | null;
}

/** What a source may hold for `sink`'s consumers: its `surfaceBudget` + 1 when it has one, else 8. */
export function heldForBudget(sink: object): number {
  const budget = (sink as { surfaceBudget?: unknown }).surfaceBudget;
  return typeof budget === "number" && Number.isInteger(budget) && budget > 0 ? budget + 1 : 8;
}

/** Options of {@link GstSourceBridge.connect}. */
export interface FromGstOptions {
  /** Which unixfdsink processes to trust; default: the same uid as this process. */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** How long to wait for the sink to appear, in ms (default: fail at once). */
  timeout?: number;
  /**
   * Most GStreamer buffers held for surfaceport consumers at once. Default: 8, and in
   * {@link GstSourceBridge.forward} the sink's `surfaceBudget` + 1 when it has one (a
   * `Publisher`'s: below it, subscribers keeping frames within their own budgets could hold every
   * buffer, and every frame after would be dropped for the others).
   */
  maxOutstanding?: number;
  /** Aborts connecting and {@link GstSourceBridge.run}. */
  signal?: AbortSignal;
}

/** Counters of a from-gst bridge, for `watch`-style display. */
export interface FromGstStats {
  /** Buffers received from GStreamer. */
  received: number;
  /** Buffers handed to the sink (each without a copy). */
  forwarded: number;
  /** Buffers copied (only buffers whose planes lie in several memories: one surface cannot adopt them). */
  copies: number;
  /** Buffers given back at once because `maxOutstanding` were held. */
  dropped: number;
  /** Buffers given back to GStreamer (RELEASE_BUFFER sent). */
  released: number;
  /** Buffers held right now. */
  outstanding: number;
}

/** The counters of {@link FromGstStats}: what a bridge did, summed over bridges one after another. */
export type FromGstCounts = Omit<FromGstStats, "outstanding">;

/** Adds a retired bridge's counters into `totals` (`outstanding` is a level, not a count). */
export function addFromGstCounts(totals: FromGstCounts, stats: FromGstStats): void {
  totals.received += stats.received;
  totals.forwarded += stats.forwarded;
  totals.copies += stats.copies;
  totals.dropped += stats.dropped;
  totals.released += stats.released;
}

/**
 * The {@link GstFrameMeta} of `buffer`, the bridge's default `toMeta`: a
 * fresh object per frame (a sink may keep it), of 64 B with its pts.
 */
export function defaultMeta(buffer: GstNewBuffer): GstFrameMeta {
  // Made with nulls, then filled: its fields stay tagged (V8 keeps a number that fits a small
  // integer as is), where a literal of three numbers had three double fields, each a box of its
  // own per frame (~32 B more).
  const meta: GstFrameMeta = { pts: null, duration: null, offset: null };
  meta.pts = bufferNumberOrNull(buffer, "pts");
  meta.duration = bufferNumberOrNull(buffer, "duration");
  meta.offset = bufferNumberOrNull(buffer, "offset");
  return meta;
}
