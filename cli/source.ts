/**
 * How the command line finds and opens streams. Until publish/subscribe
 * exists this speaks plain channels: a stream is a listener, and `list`
 * shows the surfaceport sockets Linux reports in `/proc/net/unix`.
 *
 * @module
 */

import {
  type Channel,
  connect,
  type Frame,
  listen,
  PeerClosedError,
  type PeerCredentials,
  type Surface,
} from "../mod.ts";

/** A live endpoint, as `list` shows it. */
export interface Endpoint {
  /** The name to watch, snapshot or preview. */
  name: string;
  /** "channel" (a listener) or "publisher". */
  kind: "channel" | "publisher";
  /** The owning process, when known. */
  pid: number | undefined;
  /** Current subscribers (publishers only). */
  subscribers?: number;
  /** The socket address. */
  address: string;
}

/** The endpoints of this user on this machine. */
export async function listEndpoints(): Promise<Endpoint[]> {
  if (Deno.build.os !== "linux") return [];
  const text = await Deno.readTextFile("/proc/net/unix");
  const names = new Set<string>();
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    // Listening sockets: state 01 (unconnected) with the listening flag 00010000.
    const path = fields[7];
    if (!path?.startsWith("@surfaceport/") || fields[3] !== "00010000") continue;
    names.add(path.slice("@surfaceport/".length));
  }
  return [...names].sort().map((name) => ({
    name,
    kind: "channel",
    pid: undefined,
    address: `@surfaceport/${name}`,
  }));
}

/** Options of {@link openStream}. */
export interface OpenOptions {
  /** How long to wait for the stream to appear (ms). */
  timeout?: number;
  /** Ends waits when aborted. */
  signal?: AbortSignal;
}

/** A stream being received: newest frames, with what the transport counts. */
export interface Stream {
  /** The name it was opened with. */
  readonly name: string;
  /** The producer's credentials. */
  readonly producer: PeerCredentials | undefined;
  /** Frames the transport dropped for this consumer (newest-frame policy). */
  readonly dropped: number;
  /** The next frame; rejects with `PeerClosedError` once the stream ended. */
  receive(options?: { timeout?: number; signal?: AbortSignal }): Promise<Frame>;
  /** Stops receiving. Idempotent. */
  close(): void;
}

/** Opens the stream `name`. */
export async function openStream(name: string, options: OpenOptions = {}): Promise<Stream> {
  const channel: Channel = await connect(name, options);
  return {
    name,
    producer: channel.peer,
    dropped: 0,
    receive: (o) => channel.receive(o),
    close: () => channel.close(),
  };
}

/** True for the error that means the stream ended. */
export function isEndOfStream(error: unknown): boolean {
  return error instanceof PeerClosedError;
}

/** A producer that hands each frame to every current consumer. */
export interface Producer extends Disposable {
  /** Sends `surface` to every consumer; a consumer that went away is dropped, not an error. */
  send(surface: Surface, meta?: unknown): Promise<void>;
  /** How many consumers are connected. */
  readonly consumers: number;
  /** Stops producing. Idempotent. */
  close(): void;
}

/** Starts producing under `name`. */
export function openProducer(name: string): Producer {
  const listener = listen(name);
  const channels = new Set<Channel>();
  (async () => {
    for await (const channel of listener) channels.add(channel);
  })().catch(() => {});
  const close = () => {
    listener.close();
    for (const channel of channels) channel.close();
    channels.clear();
  };
  return {
    async send(surface, meta) {
      await Promise.all([...channels].map(async (channel) => {
        try {
          await channel.send(surface, meta as never, { timeout: 1000 });
        } catch {
          channel.close();
          channels.delete(channel);
        }
      }));
    },
    get consumers() {
      return channels.size;
    },
    close,
    [Symbol.dispose]: close,
  };
}
