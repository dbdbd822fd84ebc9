/**
 * The victim of the hostile tests: a server written the way the README
 * suggests — accept every admitted peer, read each channel until it ends,
 * log protocol errors and keep reading — that records what happened on each
 * connection so tests can assert on it.
 *
 * @module
 */

import {
  type Channel,
  ClosedError,
  type Frame,
  listen,
  type Listener,
  PeerClosedError,
  ProtocolError,
} from "../../mod.ts";
import { verifyPattern } from "../../examples/pattern.ts";

/** Everything one accepted connection went through, in order. */
export class ConnectionLog {
  readonly channel: Channel;
  /** `frame WxH FORMAT [pattern ok|bad ...]`, `protocol:REASON`, `end:peer-closed`, `end:closed`, `error:...`. */
  readonly events: string[] = [];
  readonly done: Promise<void>;
  readonly #held: Frame[] = [];

  constructor(channel: Channel, holdFrames: boolean) {
    this.channel = channel;
    this.done = this.#read(holdFrames);
  }

  /** Frames kept open (when the server holds frames). */
  get held(): readonly Frame[] {
    return this.#held;
  }

  async #read(holdFrames: boolean): Promise<void> {
    try {
      // Bounded, so that a decoder that never consumed a message could not spin forever.
      for (let i = 0; i < 100_000; i++) {
        let frame: Frame;
        try {
          frame = await this.channel.receive();
        } catch (error) {
          if (error instanceof ProtocolError) {
            this.events.push(`protocol:${error.reason}`);
            continue; // documented: the channel stays usable
          }
          if (error instanceof PeerClosedError) this.events.push("end:peer-closed");
          else if (error instanceof ClosedError) this.events.push("end:closed");
          else this.events.push(`error:${error instanceof Error ? error.name : error}`);
          return;
        }
        const seed = (frame.meta as { seed?: number } | undefined)?.seed;
        const check = typeof seed === "number"
          ? ` pattern ${verifyPattern(frame.surface, seed) ?? "ok"}`
          : "";
        this.events.push(
          `frame ${frame.surface.width}x${frame.surface.height} ${frame.surface.format}${check}`,
        );
        if (holdFrames) this.#held.push(frame);
        else frame.close();
      }
      this.events.push("error:too many events");
    } finally {
      this.channel.close();
    }
  }

  /** Closes the frames this connection holds. */
  closeHeld(): void {
    for (const frame of this.#held.splice(0)) frame.close();
  }
}

/** A listener plus one reader per accepted connection. */
export class RecordingServer {
  readonly name: string;
  readonly listener: Listener;
  readonly connections: ConnectionLog[] = [];
  /** Set to keep received frames open (see {@link ConnectionLog.held}). */
  holdFrames = false;
  readonly #acceptLoop: Promise<void>;
  #acceptError: unknown;
  readonly #waiters = new Set<() => void>();

  constructor(name: string, options: Parameters<typeof listen>[1] = {}) {
    this.name = name;
    this.listener = listen(name, options);
    this.#acceptLoop = this.#accept();
  }

  async #accept(): Promise<void> {
    try {
      for await (const channel of this.listener) {
        this.connections.push(new ConnectionLog(channel, this.holdFrames));
        for (const wake of [...this.#waiters]) wake();
      }
    } catch (error) {
      this.#acceptError = error; // the listener died: tests check this
    }
  }

  /** Why the accept loop stopped, if it did before close(). */
  get acceptError(): unknown {
    return this.#acceptError;
  }

  /** Waits until `count` connections in total have been accepted. */
  async waitForConnections(count: number, ms = 10000): Promise<ConnectionLog[]> {
    const end = performance.now() + ms;
    while (this.connections.length < count) {
      const remaining = end - performance.now();
      if (remaining <= 0 || this.#acceptError) {
        throw new Error(
          `accepted ${this.connections.length} of ${count} connections in ${ms} ms` +
            (this.#acceptError ? `; accept failed: ${this.#acceptError}` : ""),
        );
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.min(remaining, 100));
        this.#waiters.add(wake);
      });
    }
    return this.connections.slice(0, count);
  }

  /** Waits until every accepted connection has ended (bounded). */
  async settle(ms = 10000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        Promise.all(this.connections.map((c) => c.done)),
        new Promise((_, reject) => {
          timer = setTimeout(() => {
            const open = this.connections.filter((c) =>
              !c.events.some((e) => e.startsWith("end:"))
            );
            reject(new Error(`${open.length} connections still open after ${ms} ms`));
          }, ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the listener and every connection, and waits for the readers. */
  async close(): Promise<void> {
    this.listener.close();
    for (const connection of this.connections) {
      connection.closeHeld();
      connection.channel.close();
    }
    await this.#acceptLoop;
    await Promise.all(this.connections.map((c) => c.done));
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
