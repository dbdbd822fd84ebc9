/**
 * Linux only: what the to-gst bridge (`to_gst.ts`) is given and gives: the
 * frames it serves, its options and its counters.
 *
 * @module
 */

import type { PeerCredentials } from "../core/errors.ts";
import type { Surface } from "../surface/surface.ts";

/** A received frame as the to-gst bridge needs it (`Frame` from a channel or a subscription). */
export interface SurfaceFrame {
  /** The frame's surface. */
  readonly surface: Surface;
  /** When the producer sent it (µs since the Unix epoch), if known: passed to `onReleased`. */
  readonly timestamp?: number;
  /** Closes the frame. */
  close(): void;
}

/** Options of {@link GstSinkBridge.listen}. */
export interface ToGstOptions {
  /** Which unixfdsrc processes may connect; default: the same uid as this process. */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** Most frames held for GStreamer at once, all clients together (default 2). */
  maxOutstanding?: number;
  /**
   * Most frames one client holds at once (default 2: a sink keeps its last
   * buffer until the next arrives); more frames skip it.
   */
  clientBudget?: number;
  /**
   * A client that holds its whole budget for this long (ms) without
   * releasing anything is disconnected (default 2000).
   */
  stallTimeout?: number;
  /**
   * How long (ms) one message may wait for room in a client's socket before
   * that client is disconnected (default 1000).
   */
  sendTimeout?: number;
  /** Framerate to announce in the caps (default 0/1: variable). */
  fps?: number;
  /** Aborts {@link GstSinkBridge.run}. */
  signal?: AbortSignal;
  /**
   * Called when every client gave a frame back (RELEASE_BUFFER or
   * disconnect), with the frame's `timestamp`: `nowMicros() - timestamp` is
   * how long the frame took from its producer through GStreamer and back.
   */
  onReleased?: (timestamp: number | undefined) => void;
  /**
   * Attach each frame's timestamp as a `GstReferenceTimestampMeta`
   * (`timestamp/x-ntp`, see `timestamp_meta.ts`), for a pipeline that
   * carries it on (the network sender's RTP header extension). Default false.
   */
  ntpTimestamps?: boolean;
}

/** Counters of a to-gst bridge, for `watch`-style display. */
export interface ToGstStats {
  /** Frames taken from surfaceport. */
  received: number;
  /** Frames sent to GStreamer as the producer's own memory (no copy). */
  zeroCopy: number;
  /** Frames copied into GStreamer's layout first. */
  copies: number;
  /** Frames dropped: no client connected or able to take it, or `maxOutstanding` held. */
  dropped: number;
  /** Times a frame skipped a client that held its whole `clientBudget`. */
  skipped: number;
  /** Clients disconnected for holding their budget past `stallTimeout` or a send past `sendTimeout`. */
  cutOff: number;
  /** Accepts that failed (out of descriptors: the waiting client was refused), then retried. */
  acceptFailures: number;
  /** Frames every client gave back (RELEASE_BUFFER or disconnect). */
  released: number;
  /** Frames held right now. */
  outstanding: number;
  /** Connected unixfdsrc clients. */
  clients: number;
}
