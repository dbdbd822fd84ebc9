/**
 * What a consumer can measure about a stream: frames per second, latency
 * from the sender's timestamp to receipt, sequence gaps, and the producer's
 * pool as seen from here (which surface ids come round, how often).
 * Shared by `watch` and `preview`.
 *
 * @module
 */

import { type Frame, nowMicros, type PixelFormat } from "../mod.ts";

/** One surface of the producer's pool, as the consumer sees it. */
export interface SeenSurface {
  /** The surface id (memfd inode / IOSurfaceID). */
  id: number;
  /** Frames that carried it. */
  frames: number;
  /** Sequence number of the last frame that carried it. */
  lastSequence: number;
}

/** A snapshot of {@link StreamStats}. */
export interface StreamReport {
  /** Format of the last frame. */
  format: PixelFormat | undefined;
  /** Width of the last frame. */
  width: number;
  /** Height of the last frame. */
  height: number;
  /** Frames received in total. */
  frames: number;
  /** Frames per second over the last window. */
  fps: number;
  /** Median latency over the last window, microseconds. */
  latencyP50Micros: number;
  /** 99th percentile latency over the last window, microseconds. */
  latencyP99Micros: number;
  /** Frames the producer sent that never arrived here (sequence gaps). */
  drops: number;
  /** Sequence number of the last frame. */
  sequence: number;
  /** Metadata of the last frame. */
  meta: unknown;
  /** The producer's surfaces seen in the last 256 frames, most recent first. */
  pool: SeenSurface[];
}

const WINDOW = 4096;
const POOL_HORIZON = 256;

/** Running statistics of received frames. Allocates nothing per frame in steady state. */
export class StreamStats {
  readonly #clockMicros: () => number;
  #latencies = new Float64Array(WINDOW);
  #count = 0;
  #windowStart = performance.now();
  #frames = 0;
  #drops = 0;
  #lastSequence = -1;
  #format: PixelFormat | undefined;
  #width = 0;
  #height = 0;
  #meta: unknown;
  #fps = 0;
  #p50 = 0;
  #p99 = 0;
  #seen = new Map<number, SeenSurface>();

  /**
   * `clockMicros` is the receiver's clock, in the senders' timebase
   * (`nowMicros`); a test passes a fixed one to get exact latencies.
   */
  constructor(clockMicros: () => number = nowMicros) {
    this.#clockMicros = clockMicros;
  }

  /** Records a received frame (before it is closed). */
  add(frame: Frame): void {
    const latency = this.#clockMicros() - frame.timestamp;
    if (this.#count < WINDOW) this.#latencies[this.#count++] = latency;
    this.#frames++;
    // Only past the highest sequence seen, saturating: a lying producer cannot inflate it.
    if (frame.sequence > this.#lastSequence) {
      if (this.#lastSequence >= 0) {
        this.#drops = Math.min(
          Number.MAX_SAFE_INTEGER,
          this.#drops + (frame.sequence - this.#lastSequence - 1),
        );
      }
      this.#lastSequence = frame.sequence;
    }
    const surface = frame.surface;
    this.#format = surface.format;
    this.#width = surface.width;
    this.#height = surface.height;
    this.#meta = frame.meta;
    const seen = this.#seen.get(surface.id);
    if (seen) {
      seen.frames++;
      seen.lastSequence = frame.sequence;
    } else {
      this.#seen.set(surface.id, { id: surface.id, frames: 1, lastSequence: frame.sequence });
    }
  }

  /** Frames recorded so far. */
  get frames(): number {
    return this.#frames;
  }

  /** Adds drops the transport reported (e.g. a subscription's newest-frame policy). */
  set extraDrops(value: number) {
    this.#extraDrops = value;
  }
  #extraDrops = 0;

  /**
   * Closes the current window (computing fps and percentiles over it) if
   * it is at least `minMs` old, and returns the report.
   */
  report(minMs = 1000): StreamReport {
    const now = performance.now();
    const elapsed = now - this.#windowStart;
    if (elapsed >= minMs) {
      this.#fps = (this.#count * 1000) / elapsed;
      const sorted = this.#latencies.subarray(0, this.#count).sort();
      this.#p50 = this.#count ? sorted[Math.floor(0.5 * (this.#count - 1))] : 0;
      this.#p99 = this.#count ? sorted[Math.floor(0.99 * (this.#count - 1))] : 0;
      this.#count = 0;
      this.#windowStart = now;
      for (const [id, seen] of this.#seen) {
        if (this.#lastSequence - seen.lastSequence > POOL_HORIZON) this.#seen.delete(id);
      }
    }
    return {
      format: this.#format,
      width: this.#width,
      height: this.#height,
      frames: this.#frames,
      fps: this.#fps,
      latencyP50Micros: this.#p50,
      latencyP99Micros: this.#p99,
      drops: Math.max(this.#drops, this.#extraDrops),
      sequence: this.#lastSequence,
      meta: this.#meta,
      pool: [...this.#seen.values()].sort((a, b) => b.lastSequence - a.lastSequence),
    };
  }
}

/** Formats microseconds as milliseconds with two decimals. */
export function ms(micros: number): string {
  return `${(micros / 1000).toFixed(2)} ms`;
}

/** Metadata as one short line (bytes shown as a count). */
export function metaText(meta: unknown, max = 120): string {
  if (meta === undefined) return "-";
  const text = meta instanceof Uint8Array ? `<${meta.length} bytes>` : JSON.stringify(meta);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
