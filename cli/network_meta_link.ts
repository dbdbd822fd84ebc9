/**
 * The command line's side channel for the sender's metadata
 * (`src/gst/network_meta.ts`): records over TCP to the same port number as
 * the video's UDP (or SRT) port. The sender connects (again and again, if
 * the receiver is not there yet or went away) and never waits for it: the
 * newest 64 records wait to be written (meanwhile too), older ones are
 * dropped and counted.
 * The receiver accepts at most 4 connections at once. Needs `--allow-net`.
 *
 * @module
 */

import { MetaRecordReader, type SenderMetas } from "../src/gst/network_meta.ts";

/** Whether this process may open TCP connections to / listen on `host` (no prompt). */
export function netAllowed(host: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "net", host }).state === "granted";
  } catch {
    return false;
  }
}

/** Sends metadata records to `host:port` over TCP, reconnecting; never blocks the caller. */
export class MetaLinkSender {
  readonly #host: string;
  readonly #port: number;
  readonly #queue: Uint8Array[] = [];
  readonly #stop = new AbortController();
  #wake: (() => void) | undefined;
  #loop: Promise<void>;
  /** Records written to the connection. */
  sent = 0;
  /** Records dropped: 64 newer ones were waiting. */
  dropped = 0;

  /** Starts connecting to `host:port`. */
  constructor(host: string, port: number) {
    this.#host = host;
    this.#port = port;
    this.#loop = this.#run();
  }

  /** Queues `record` (the oldest waiting one is dropped, and counted, when 64 are waiting). */
  send(record: Uint8Array): void {
    if (this.#stop.signal.aborted) return;
    if (this.#queue.length >= 64) {
      this.#queue.shift();
      this.dropped++;
    }
    this.#queue.push(record);
    this.#wake?.();
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await Deno.connect({ hostname: this.#host, port: this.#port });
        signal.addEventListener("abort", () => conn?.close(), { once: true });
        conn.setNoDelay(true);
        while (!signal.aborted) {
          const record = this.#queue.shift();
          if (!record) {
            await new Promise<void>((resolve) => (this.#wake = resolve));
            this.#wake = undefined;
            continue;
          }
          for (let at = 0; at < record.length;) at += await conn.write(record.subarray(at));
          this.sent++;
        }
      } catch {
        // not there (yet), or gone: tried again; the newest records wait meanwhile
      } finally {
        try {
          conn?.close();
        } catch { /* closed by abort */ }
      }
      if (!signal.aborted) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Stops; idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
  }
}

/** Accepts metadata records on `bind:port` over TCP into `store`. */
export class MetaLinkListener {
  readonly #listener: Deno.TcpListener;
  readonly #connections = new Set<Deno.TcpConn>();
  readonly #loop: Promise<void>;
  /** Connections dropped for a malformed record. */
  malformed = 0;

  /** Listens on `bind:port` (throws as `Deno.listen` does). */
  constructor(bind: string, port: number, store: SenderMetas) {
    this.#listener = Deno.listen({ hostname: bind, port });
    this.#loop = this.#accept(store);
  }

  async #accept(store: SenderMetas): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // closed
      }
      if (this.#connections.size >= 4) {
        conn.close();
        continue;
      }
      this.#connections.add(conn);
      this.#read(conn, store).finally(() => {
        this.#connections.delete(conn);
        try {
          conn.close();
        } catch { /* closed already */ }
      });
    }
  }

  async #read(conn: Deno.TcpConn, store: SenderMetas): Promise<void> {
    const reader = new MetaRecordReader((timestamp, meta) => store.put(timestamp, meta));
    const buffer = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return;
        reader.push(buffer.subarray(0, n));
      }
    } catch (error) {
      if ((error as Error).name === "ProtocolError") this.malformed++;
    }
  }

  /** Stops listening and closes every connection; idempotent. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed already */ }
    for (const conn of this.#connections) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
    await this.#loop;
  }
}
