/**
 * Binding a name ({@link listen}, {@link Listener}) and connecting to one
 * ({@link connect}): both give channels (`channel.ts`).
 *
 * @module
 */

import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import type { BackendListener } from "../contract/backend.ts";
import { Channel } from "./channel.ts";
import { ClosedError, SystemCallError, TimeoutError } from "../core/errors.ts";
import {
  type ChannelOptions,
  connectBackend,
  type ConnectOptions,
  deadlineOf,
  resolveConnectOptions,
  resolveLimits,
  resolvePeerCheck,
  type WaitOptions,
} from "./options.ts";
import { backend } from "../platform.ts";
import { register, type Registration } from "./registry.ts";

/** A bound name that peers connect to. */
export class Listener {
  #listener: BackendListener;
  #registration: Registration | undefined;
  #closed = false;

  /** @ignore */
  constructor(listener: BackendListener, registration?: Registration) {
    this.#listener = listener;
    this.#registration = registration;
  }

  /**
   * The bound address: on Linux `@surfaceport/NAME` (the abstract socket) or
   * the socket path; on macOS `surfaceport.NAME` (the bootstrap service name).
   */
  get address(): string {
    return this.#listener.address;
  }

  /**
   * Waits for the next peer that passes the `allowPeer` check (refused ones
   * are disconnected and skipped). Rejects with `ClosedError` once the
   * listener is closed. When this process is out of descriptors, hangs up on
   * the waiting client and rejects with `SystemCallError` (`EMFILE` or
   * `ENFILE`); the listener stays usable (see `docs/errors.md`).
   */
  async accept<M = unknown>(options: WaitOptions = {}): Promise<Channel<M>> {
    if (this.#closed) throw new ClosedError("listener", "accept");
    if (options.timeout === undefined) {
      return new Channel<M>(await this.#listener.accept(options.signal));
    }
    const deadline = deadlineOf("accept", options.timeout);
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new TimeoutError("accept", options.timeout!)),
      deadline - performance.now(),
    );
    const onAbort = () => controller.abort(options.signal!.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return new Channel<M>(await this.#listener.accept(controller.signal));
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Yields each accepted channel until the listener is closed. A client
   * refused because this process is out of descriptors (`accept()` rejects
   * with `SystemCallError` `EMFILE` / `ENFILE`) is skipped: the iteration
   * keeps serving, pausing 10 ms after each such refusal.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Channel, void, undefined> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (error) {
        if (error instanceof ClosedError && this.#closed) return;
        if (error instanceof SystemCallError && (error.errno === 24 || error.errno === 23)) {
          await new Promise((resolve) => setTimeout(resolve, 10)); // EMFILE, ENFILE: try again
          continue;
        }
        throw error;
      }
    }
  }

  /** Stops listening (a filesystem socket file is removed). Open channels stay open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registration?.remove(); // first: a registry entry never outlives the bound name
    this.#listener.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: the address, whether it is closed. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    return `Listener ${inspect({ address: this.address, closed: this.#closed }, options)}`;
  }
}

/**
 * Binds `name` and returns a {@link Listener} (bound when this returns). On
 * Linux a name without `/` is the abstract socket `"\0surfaceport/" + name`;
 * a name with `/` is a filesystem socket path, created mode 0600 and removed
 * on close. On macOS the name is checked in with the bootstrap server as
 * `surfaceport.NAME` (at most 127 UTF-8 bytes). Bootstrap names are
 * predictable: another process of the same user can claim a name first, and
 * `allowPeer` (same uid by default), checked by both sides against the
 * kernel's audit trailer, admits it — it tells you who a peer runs as, not
 * that it is the program you meant. A name closed a moment ago may still be
 * held by launchd; `listen` retries it briefly (up to 250 ms, blocking).
 * The listener is entered in this user's registry, so `list()` shows it
 * (only when the process may read and write the registry directory; see
 * `list`).
 */
export function listen(name: string, options: ChannelOptions = {}): Listener {
  const limits = resolveLimits(options);
  const listener = backend().listen(name, resolvePeerCheck(options), limits);
  return new Listener(listener, register("channel", name, listener.address));
}

/**
 * Connects to the listener bound under `name`, checking its credentials
 * like the listener checks ours (default: same uid).
 *
 * Start order: with `timeout`, `connect` waits for the name to appear — a
 * consumer may start before its producer — and gives up with
 * `TimeoutError` after `timeout` ms. Without `timeout` it fails at once
 * (`SystemCallError` `ECONNREFUSED`/`ENOENT` on Linux, `MachError`
 * `BOOTSTRAP_UNKNOWN_SERVICE` on macOS) when nothing listens.
 */
export async function connect<M = unknown>(
  name: string,
  options: ConnectOptions = {},
): Promise<Channel<M>> {
  const resolved = resolveConnectOptions("connect", options);
  return new Channel<M>(
    await connectBackend(backend(), name, resolved, options.timeout, options.signal),
  );
}
