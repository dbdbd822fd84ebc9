/**
 * How the command line finds and opens streams: `list()` for the live
 * endpoints; a publisher is subscribed to (newest frame first), a plain
 * listener (`listen()`, e.g. a producer that accepts consumers) connected to
 * as a channel.
 *
 * @module
 */

import {
  connect,
  type EndpointInfo,
  type Frame,
  list,
  PeerClosedError,
  type PeerCredentials,
  publish,
  subscribe,
  type Surface,
} from "../mod.ts";

/** A live endpoint, as `list` shows it. */
export type Endpoint = EndpointInfo;

/** The live endpoints of this user on this machine, sorted by name. */
export function listEndpoints(): Promise<Endpoint[]> {
  return list();
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
  /** How it is received: a subscription to a publisher, or a channel to a listener. */
  readonly kind: "subscription" | "channel";
  /** The producer's credentials (`undefined` while a subscription reconnects). */
  readonly producer: PeerCredentials | undefined;
  /** Frames the transport dropped for this consumer (newest-frame policy). */
  readonly dropped: number;
  /** The next frame; rejects with `PeerClosedError` once the stream ended. */
  receive(options?: { timeout?: number; signal?: AbortSignal }): Promise<Frame>;
  /** Stops receiving. Idempotent. */
  close(): void;
}

/**
 * Opens the stream `name`: subscribes (policy "latest", depth 1) unless
 * `list()` shows `name` as a plain listener, which is connected to as a
 * channel instead. Waits up to `timeout` for the name to appear.
 */
export async function openStream(name: string, options: OpenOptions = {}): Promise<Stream> {
  // Not swallowed: a macOS process that cannot load its shim must say why, not show no streams.
  const endpoints = await list();
  const listener = endpoints.some((e) => e.name === name && e.kind === "channel") &&
    !endpoints.some((e) => e.name === name && e.kind === "publisher");
  if (listener) {
    const channel = await connect(name, options);
    return {
      name,
      kind: "channel",
      producer: channel.peer,
      dropped: 0,
      receive: (o) => channel.receive(o),
      close: () => channel.close(),
    };
  }
  const subscription = await subscribe(name, { policy: "latest", depth: 1, ...options });
  return {
    name,
    kind: "subscription",
    get producer() {
      return subscription.publisher;
    },
    get dropped() {
      return subscription.stats.dropped;
    },
    receive: (o) => subscription.receive(o),
    close: () => subscription.close(),
  };
}

/** True for the error that means the stream ended. */
export function isEndOfStream(error: unknown): boolean {
  return error instanceof PeerClosedError;
}

/** A producer that hands each frame to every current subscriber. */
export interface Producer extends Disposable {
  /** Sends `surface` to every subscriber (a subscriber that went away is not an error). */
  send(surface: Surface, meta?: unknown): Promise<void>;
  /** How many subscribers are connected. */
  readonly consumers: number;
  /** The most surfaces its consumers can keep in use at once (`Publisher.surfaceBudget`). */
  readonly surfaceBudget: number;
  /** Stops producing. Idempotent. */
  close(): void;
}

/** Options of {@link openProducer}. */
export interface ProducerOptions {
  /** Told when a consumer is cut off (stalled, or broke the protocol), with its pid and why. */
  onCutOff?: (pid: number, reason: Error) => void;
}

/** Publishes under `name`. */
export function openProducer(name: string, options: ProducerOptions = {}): Producer {
  const { onCutOff } = options;
  const publisher = publish(name, {
    onCutOff: onCutOff && ((subscriber, reason) => onCutOff(subscriber.pid, reason)),
  });
  return {
    send: (surface, meta) => publisher.send(surface, meta as never),
    get consumers() {
      return publisher.subscribers.length;
    },
    surfaceBudget: publisher.surfaceBudget,
    close: () => publisher.close(),
    [Symbol.dispose]: () => publisher.close(),
  };
}
