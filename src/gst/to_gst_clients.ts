/**
 * Linux only: the clients of the to-gst bridge (`to_gst.ts`): the
 * `unixfdsrc` processes connected to its socket, what each holds, and
 * their RELEASE_BUFFERs. A client holds at most `clientBudget` frames (a
 * frame that finds it there skips it), and one that stays at its budget for
 * `stallTimeout` ms is cut off; a message that waits past `sendTimeout` for
 * room in a client's socket cuts that client off.
 *
 * @module
 */

import { ClosedError, TimeoutError } from "../core/errors.ts";
import type { WaitEnded } from "../linux/poller.ts";
import { releaseIdNumber } from "./decode.ts";
import type { FrameSlots } from "./frame_slots.ts";
import { encodeCaps } from "./protocol.ts";
import type { UnixFdServer } from "./socket.ts";
import type { ToGstStats } from "./to_gst_options.ts";
import type { UnixFdConnection } from "./unixfd_connection.ts";

/** The bridge's limits on each client (its options, defaults applied). */
export interface ClientLimits {
  /** Most frames one client holds at once. */
  clientBudget: number;
  /** A client at its budget this long (ms) is cut off. */
  stallTimeout: number;
  /** How long (ms) one message may wait for room in a client's socket. */
  sendTimeout: number;
}

/** What the bridge knows of one connected client. */
export interface ClientState {
  readonly client: UnixFdConnection;
  /** Frames it holds (sent, not released). */
  held: number;
  /**
   * When the frame that filled its budget was admitted (ms,
   * `performance.now()`): still at its budget `stallTimeout` later, it is
   * cut off. From that moment, not from its last release: a client that
   * released everything and then saw no frame for a while (a pause in the
   * stream) is not stalled the instant it holds its budget again.
   */
  fullSince: number;
  /** The id of the last frame admitted to it. */
  admittedFor: number;
  /** Its wait for releases ended (made once per client). */
  readonly onReadable: WaitEnded;
}

/**
 * The to-gst bridge's `unixfdsrc` clients: accepted as they come, each
 * sent the caps announced last; the RELEASE_BUFFERs each sends read as
 * they come; a frame's admission of the clients under their `clientBudget`
 * (one stalled at it past `stallTimeout` cut off); a message sent to them
 * all; a client dropped.
 */
export class ToGstClients {
  readonly #server: UnixFdServer;
  readonly #clients = new Map<UnixFdConnection, ClientState>();
  /** The same clients as a list, walked by index on every frame (no iterator or entry pair). */
  readonly list: ClientState[] = [];
  /** The frames the clients hold. */
  readonly #frames: FrameSlots;
  /** The bridge's counters (skipped, cutOff, acceptFailures are counted here). */
  readonly #stats: ToGstStats;
  readonly #clientBudget: number;
  readonly #stallTimeout: number;
  readonly #sendTimeout: number;
  readonly #signal: AbortSignal | undefined;
  /** The caps sent last to every client; a new client is sent them first. */
  caps: string | undefined;
  #closed = false;
  #accepting: Promise<void>;

  /** Starts accepting on `server` (owned here now). */
  constructor(
    server: UnixFdServer,
    frames: FrameSlots,
    stats: ToGstStats,
    limits: ClientLimits,
    signal: AbortSignal | undefined,
  ) {
    this.#server = server;
    this.#frames = frames;
    this.#stats = stats;
    this.#clientBudget = limits.clientBudget;
    this.#stallTimeout = limits.stallTimeout;
    this.#sendTimeout = limits.sendTimeout;
    this.#signal = signal;
    this.#accepting = this.#acceptLoop();
  }

  /** The socket address served. */
  get address(): string {
    return this.#server.address;
  }

  /** How many clients are connected. */
  get size(): number {
    return this.#clients.size;
  }

  /**
   * Marks the clients that may take one more frame now with `id`; returns
   * how many. A client at its budget is skipped, and cut off once it has
   * been there for `stallTimeout`.
   */
  admit(id: number): number {
    const now = performance.now();
    let admitted = 0;
    for (let i = this.list.length - 1; i >= 0; i--) {
      const state = this.list[i];
      if (state.held < this.#clientBudget) {
        state.admittedFor = id;
        if (state.held + 1 === this.#clientBudget) state.fullSince = now; // this frame fills it
        admitted++;
        continue;
      }
      this.#stats.skipped++;
      if (now - state.fullSince > this.#stallTimeout) {
        this.#stats.cutOff++;
        this.drop(state.client);
      }
    }
    return admitted;
  }

  /** Sends `message` to every client by `sendTimeout`; a client that fails is dropped. */
  async broadcast(message: Uint8Array, fds: number[]): Promise<void> {
    const deadline = performance.now() + this.#sendTimeout;
    await Promise.all([...this.#clients.keys()].map(async (client) => {
      try {
        await client.send(message, fds, deadline);
      } catch (error) {
        if (error instanceof TimeoutError) this.#stats.cutOff++;
        this.drop(client);
      }
    }));
  }

  /** Disconnects `client`, and lets go of the frames it held. */
  drop(client: UnixFdConnection): void {
    const state = this.#clients.get(client);
    if (!state) return;
    this.#clients.delete(client);
    this.list.splice(this.list.indexOf(state), 1);
    client.close();
    this.#frames.dropClient(client);
  }

  /** `client` gave back frame `id` (RELEASE_BUFFER): false if it did not hold it. */
  #release(client: UnixFdConnection, id: number): boolean {
    const entry = this.#frames.find(id);
    if (!entry || !entry.pending.includes(client)) return false;
    const state = this.#clients.get(client);
    if (state) state.held--;
    this.#frames.release(entry, client);
    return true;
  }

  /**
   * Accepts clients until closed or aborted. An accept that fails (out of
   * descriptors: the waiting client was refused) is retried after a pause
   * of 10 ms doubling to 1 s, never ends the loop: a bridge that stopped
   * accepting would leave every later client queued with no answer.
   */
  async #acceptLoop(): Promise<void> {
    let pause = 10;
    while (!this.#closed) {
      let client: UnixFdConnection;
      try {
        client = await this.#server.accept(this.#signal);
        pause = 10;
      } catch (error) {
        if (this.#closed || this.#signal?.aborted || error instanceof ClosedError) return;
        this.#stats.acceptFailures++;
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 1000);
        continue;
      }
      const state: ClientState = {
        client,
        held: 0,
        fullSince: 0,
        admittedFor: 0,
        onReadable: (ready, failure) => {
          if (!ready || failure !== undefined) this.drop(client); // closed, or the poll failed
          else this.#readReleases(client);
        },
      };
      this.#clients.set(client, state);
      this.list.push(state);
      if (this.caps) {
        client.send(encodeCaps(this.caps), [], performance.now() + this.#sendTimeout)
          .catch(() => this.drop(client));
      }
      this.#readReleases(client);
    }
  }

  /**
   * Reads the client's RELEASE_BUFFERs as they come: whatever is waiting,
   * then a park on the shared poll through the connection's one wait record,
   * re-armed after each (no promise, record or async frame per release: a
   * release costs only the poll's round). Drops the client when it goes
   * away, misbehaves, or releases an id it does not hold (as unixfdsink).
   */
  #readReleases(client: UnixFdConnection): void {
    try {
      for (;;) {
        const message = client.tryReceive();
        if (!message) break;
        if (message.type !== "release-buffer") continue;
        if (!this.#release(client, releaseIdNumber(message))) throw new Error("not held");
      }
      client.armReadable(this.#clients.get(client)!.onReadable);
    } catch {
      this.drop(client); // disconnected, closed or misbehaved
    }
  }

  /** Stops accepting and disconnects every client (GStreamer then drops its buffers). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const client of [...this.#clients.keys()]) this.drop(client);
    this.#accepting.catch(() => {});
  }
}
