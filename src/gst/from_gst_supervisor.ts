/**
 * Keeps a `gst-launch-1.0` pipeline that ends in `unixfdsink` running
 * together with the from-gst bridge that takes its buffers: the receive side
 * of the network bridge (`network.ts`) and the PipeWire source
 * (`pipewire.ts`). Each round launches the pipeline, connects the bridge,
 * runs it until the pipeline ends, retires the bridge (its counters summed),
 * stops the process, notes its last error line, counts the restart and
 * backs off (100 ms, doubled up to a cap; from 100 ms again after a bridge
 * that ran to its end), until {@link GstSourceSupervisor.close}. What the
 * two differ in is passed in: the pipeline of each round, the connect
 * timeout, the cap, and a look at the ended process's error text.
 *
 * @module
 */

import { GstSourceBridge } from "./from_gst.ts";
import {
  addFromGstCounts,
  type FromGstCounts,
  type FromGstStats,
  type SurfaceSink,
} from "./from_gst_options.ts";
import { type GstLauncher, type GstProcess, lastError, pause } from "./launcher.ts";
import type { GstNewBuffer } from "./protocol.ts";

/** What the pipelines a {@link GstSourceSupervisor} keeps running are, and how it waits. */
export interface GstSourceSupervisorOptions {
  /** The `@abstract` socket the pipelines' `unixfdsink` serves. */
  address: string;
  /** The pipeline to launch, asked again at each start. */
  pipeline: () => readonly string[];
  /** How long a started pipeline's `unixfdsink` may take to appear, ms. */
  connectTimeout: number;
  /** The longest pause between two starts, ms. */
  maxBackoff: number;
  /** Reads what it needs from a bridge being retired (its caps), before it is closed. */
  retiring?: (bridge: GstSourceBridge) => void;
  /**
   * Reads the error text of a pipeline that ended (not stopped by `close`),
   * after the bridge was retired; true: start the next one at once.
   */
  ended?: (errorText: string) => boolean;
}

/**
 * Runs a pipeline and its from-gst bridge again and again: see the
 * module's description.
 */
export class GstSourceSupervisor {
  readonly #launch: GstLauncher;
  readonly #options: GstSourceSupervisorOptions;
  readonly #stop = new AbortController();
  #process: GstProcess | undefined;
  #bridge: GstSourceBridge | undefined;
  #restarts = 0;
  #lastError = "";
  readonly #totals: FromGstCounts = {
    received: 0,
    forwarded: 0,
    copies: 0,
    dropped: 0,
    released: 0,
  };

  /** Launches nothing yet: {@link run} does. */
  constructor(launch: GstLauncher, options: GstSourceSupervisorOptions) {
    this.#launch = launch;
    this.#options = options;
  }

  /** The bridge of the running pipeline, once connected. */
  get bridge(): GstSourceBridge | undefined {
    return this.#bridge;
  }

  /** How often the pipeline was started again after it ended. */
  get restarts(): number {
    return this.#restarts;
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#lastError;
  }

  /** The bridges' counters, summed over every pipeline so far. */
  get stats(): FromGstStats {
    const now = this.#bridge?.stats;
    const sum = (key: keyof FromGstCounts) => this.#totals[key] + (now?.[key] ?? 0);
    return {
      received: sum("received"),
      forwarded: sum("forwarded"),
      copies: sum("copies"),
      dropped: sum("dropped"),
      released: sum("released"),
      outstanding: now?.outstanding ?? 0,
    };
  }

  /** Stops the running pipeline, which then starts again (after the pause). */
  restartPipeline(): void {
    void this.#process?.stop();
  }

  /**
   * Hands every buffer of every pipeline to `sink` until {@link close}.
   * Rejects only with what the bridge threw while its pipeline still ran,
   * other than the sink or the connection going away.
   */
  async run<M>(
    sink: SurfaceSink<M>,
    toMeta: (buffer: GstNewBuffer) => M,
    maxOutstanding: number | undefined,
  ): Promise<void> {
    const stop = this.#stop.signal;
    for (
      let backoff = 100;
      !stop.aborted;
      backoff = Math.min(backoff * 2, this.#options.maxBackoff)
    ) {
      const process = this.#launch(this.#options.pipeline());
      this.#process = process;
      const ended = new AbortController();
      process.exited.then(() => ended.abort());
      try {
        this.#bridge = await GstSourceBridge.connect(this.#options.address, {
          timeout: this.#options.connectTimeout,
          maxOutstanding,
          signal: AbortSignal.any([ended.signal, stop]),
        });
        await this.#bridge.run(sink, toMeta);
        backoff = 100;
      } catch (error) {
        if (stop.aborted) break;
        if (!ended.signal.aborted && !isPeerGone(error)) throw error;
      } finally {
        this.#retire();
        await process.stop();
      }
      if (stop.aborted) break;
      const text = process.errorText();
      this.#lastError = lastError(text);
      this.#restarts++;
      if (this.#options.ended?.(text)) {
        // At once this time only: a pipeline that then fails again waits 100 ms, doubled from
        // there (a backoff set to 0 stayed 0, and a gone node was launched again in a loop).
        backoff = 50;
        continue;
      }
      await pause(backoff, stop);
    }
  }

  #retire(): void {
    const bridge = this.#bridge;
    if (!bridge) return;
    this.#options.retiring?.(bridge);
    addFromGstCounts(this.#totals, bridge.stats);
    bridge.close();
    this.#bridge = undefined;
  }

  /** Stops the pipeline and the bridge; idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#bridge?.close();
    await this.#process?.stop();
  }
}

function isPeerGone(error: unknown): boolean {
  return error instanceof Error &&
    (error.name === "PeerClosedError" || error.name === "AbortError" ||
      error.name === "TimeoutError");
}
