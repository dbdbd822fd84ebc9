/**
 * The options of channels and publish/subscribe, their checks and defaults,
 * deadlines and the caller's timeout in errors, and the connect that retries
 * until a name appears (shared by `connect` and `subscribe`).
 *
 * @module
 */

import type {
  Backend,
  BackendConnection,
  ConnectionLimits,
  PeerPredicate,
} from "../contract/backend.ts";
import { type PeerCredentials, TimeoutError } from "../core/errors.ts";
import { DEFAULT_MAX_SURFACE_BYTES } from "../core/geometry.ts";
import { backend } from "../platform.ts";
import { DEFAULT_MAX_META_BYTES } from "../wire/wire.ts";

/** Options shared by {@link listen} and {@link connect}. */
export interface ChannelOptions {
  /**
   * Decides whether the peer may talk to this side, from its kernel-reported
   * credentials. Default: only processes running as this process's
   * effective uid.
   */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** Refuse received surfaces larger than this many bytes (default 1 GiB). */
  maxSurfaceBytes?: number;
  /** Refuse received metadata larger than this many bytes (default and maximum 64 KiB). */
  maxMetaBytes?: number;
  /**
   * How many distinct received surfaces stay mapped so that a surface that
   * comes back (from the sender's pool) is not mapped again. Default 8.
   */
  mappingCacheSize?: number;
  /**
   * Low-latency mode: when no frame is waiting, keep polling for this many
   * microseconds on the JS thread before parking the wait on a worker
   * thread. Spinning trades CPU for the ~30 µs thread hop; useful when
   * frames arrive back to back. Default 0 (never spin).
   */
  spinMicros?: number;
}

/** Options of {@link connect}. */
export interface ConnectOptions extends ChannelOptions {
  /**
   * Wait up to this many milliseconds for the listener: until the name
   * appears (nothing bound under it yet — `ECONNREFUSED`/`ENOENT` on Linux,
   * an unknown bootstrap service on macOS — is retried with a back-off of
   * 5 ms doubling to 100 ms) and for the connection itself. Without a
   * timeout, `connect` fails at once when nothing listens.
   */
  timeout?: number;
  /** Give up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
}

/** Options of {@link Channel.receive} and {@link Listener.accept}. */
export interface WaitOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. */
  timeout?: number;
  /** Give up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
}

/** Options of {@link Channel.send}. */
export interface SendOptions extends WaitOptions {
  /**
   * The frame's timestamp in microseconds since the Unix epoch (default:
   * `nowMicros()`, `CLOCK_REALTIME` on Linux), e.g. a capture time; within
   * ±(2^53−1), fractions truncated.
   */
  timestamp?: number;
}

/**
 * Reports a backend's timeout with the caller's `timeout`: a backend waits in
 * slices towards a deadline, and its own message would name the last slice.
 */
function withCallersTimeout<T>(
  promise: Promise<T>,
  operation: string,
  timeout: number | undefined,
): Promise<T> {
  if (timeout === undefined) return promise;
  return promise.catch((error) => {
    throw error instanceof TimeoutError ? new TimeoutError(operation, timeout) : error;
  });
}

/** Internal: the caller's timeout in place of a backend's (see {@link withCallersTimeout}). */
export function callersTimeout(
  error: unknown,
  operation: string,
  timeout: number | undefined,
): unknown {
  return timeout !== undefined && error instanceof TimeoutError
    ? new TimeoutError(operation, timeout)
    : error;
}

/** Internal: throws a `RangeError` unless `timeout` is a non-negative number of milliseconds (or absent). */
export function checkTimeout(operation: string, timeout: number | undefined): void {
  if (timeout !== undefined && (typeof timeout !== "number" || !(timeout >= 0))) {
    throw new RangeError(
      `${operation}: timeout must be a non-negative number of milliseconds, got ${timeout}`,
    );
  }
}

/** Internal: turns a `timeout` option into a deadline on the `performance.now()` clock. */
export function deadlineOf(operation: string, timeout: number | undefined): number {
  if (timeout === undefined) return Infinity;
  checkTimeout(operation, timeout);
  return performance.now() + timeout;
}

/** Internal: checks the size and latency options and fills in their defaults. */
export function resolveLimits(options: ChannelOptions): ConnectionLimits {
  const maxMetaBytes = options.maxMetaBytes ?? DEFAULT_MAX_META_BYTES;
  if (
    !Number.isInteger(maxMetaBytes) || maxMetaBytes < 0 || maxMetaBytes > DEFAULT_MAX_META_BYTES
  ) {
    throw new RangeError(`maxMetaBytes must be an integer from 0 to ${DEFAULT_MAX_META_BYTES}`);
  }
  const maxSurfaceBytes = options.maxSurfaceBytes ?? DEFAULT_MAX_SURFACE_BYTES;
  if (!Number.isSafeInteger(maxSurfaceBytes) || maxSurfaceBytes <= 0) {
    throw new RangeError("maxSurfaceBytes must be a positive integer");
  }
  const mappingCacheSize = options.mappingCacheSize ?? 8;
  if (!Number.isInteger(mappingCacheSize) || mappingCacheSize < 0) {
    throw new RangeError("mappingCacheSize must be a non-negative integer");
  }
  const spinMicros = options.spinMicros ?? 0;
  if (typeof spinMicros !== "number" || !(spinMicros >= 0) || spinMicros > 1e6) {
    throw new RangeError("spinMicros must be a number of microseconds from 0 to 1000000");
  }
  return { maxSurfaceBytes, maxMetaBytes, mappingCacheSize, spinMicros };
}

/** Internal: the `allowPeer` check (default: same effective uid); a throwing predicate refuses. */
export function resolvePeerCheck(options: ChannelOptions): (peer: PeerCredentials) => boolean {
  if (options.allowPeer !== undefined) {
    if (typeof options.allowPeer !== "function") {
      throw new TypeError("allowPeer must be a function");
    }
    const allow = options.allowPeer;
    return (peer) => {
      try {
        return allow(peer) === true;
      } catch {
        return false; // a throwing predicate refuses
      }
    };
  }
  const uid = backend().currentUid();
  return (peer) => peer.uid === uid;
}

/** Internal: what {@link resolveConnectOptions} makes of a connect's options. */
export interface ResolvedConnect {
  /** The size and latency limits, defaults filled in. */
  limits: ConnectionLimits;
  /** The `timeout` as a deadline on the `performance.now()` clock (`Infinity` without one). */
  deadline: number;
  /** The `allowPeer` check. */
  allowPeer: PeerPredicate;
}

/**
 * Internal: the checked options of a connect (`connect`, `subscribe`), in
 * the order their errors are reported: limits, then `timeout` (named after
 * `operation`), then `allowPeer`.
 */
export function resolveConnectOptions(
  operation: string,
  options: ChannelOptions & { timeout?: number },
): ResolvedConnect {
  const limits = resolveLimits(options);
  const deadline = deadlineOf(operation, options.timeout);
  const allowPeer = resolvePeerCheck(options);
  return { limits, deadline, allowPeer };
}

/**
 * Internal: connects through the backend. With a `timeout`, a name that
 * nothing listens under yet is retried (5 ms back-off doubling to 100 ms)
 * until the deadline; without one, the first failure is final.
 */
export async function connectBackend(
  over: Backend,
  name: string,
  { limits, deadline, allowPeer }: ResolvedConnect,
  timeout: number | undefined,
  signal: AbortSignal | undefined,
): Promise<BackendConnection> {
  for (let backoff = 5;; backoff = Math.min(backoff * 2, 100)) {
    try {
      return await withCallersTimeout(
        over.connect(name, allowPeer, limits, deadline, signal),
        "connect",
        timeout,
      );
    } catch (error) {
      if (timeout === undefined || !over.nameAbsent(error)) throw error;
      const remaining = deadline - performance.now();
      if (remaining <= 0) {
        const timedOut = new TimeoutError("connect", timeout);
        timedOut.cause = error;
        timedOut.message += ` (nothing listened under ${JSON.stringify(name)}: ${
          (error as Error).message
        })`;
        throw timedOut;
      }
      await abortableSleep(Math.min(backoff, remaining), signal);
    }
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
