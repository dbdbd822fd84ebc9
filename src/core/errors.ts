/**
 * The error types surfaceport throws. Every failure that is not a plain
 * argument mistake (those are `TypeError` / `RangeError`, thrown before any
 * system call) is a {@link SurfaceportError} with a stable `code`.
 *
 * @module
 */

/** Stable machine-readable codes carried by {@link SurfaceportError}. */
export type SurfaceportErrorCode =
  | "SYSTEM_CALL"
  | "MACH"
  | "PROTOCOL"
  | "CLOSED"
  | "PEER_CLOSED"
  | "PEER_REFUSED"
  | "TIMEOUT"
  | "POOL_EXHAUSTED"
  | "LOCK_STATE"
  | "UNSUPPORTED"
  | "DENO_TOO_OLD"
  | "ABI_MISMATCH"
  | "LIBRARY_LOAD";

/** Base class of every error surfaceport throws on purpose. */
export class SurfaceportError extends Error {
  /** A stable code: switch on this, not on the message. */
  readonly code: SurfaceportErrorCode;

  /** Creates an error with a stable `code`. */
  constructor(code: SurfaceportErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A libc call failed (Linux). Carries the call, the errno value and its
 * symbolic name, e.g. `memfd_create failed: EMFILE (24) ...`.
 */
export class SystemCallError extends SurfaceportError {
  /** The failing C function, e.g. `"sendmsg"`. */
  readonly call: string;
  /** The raw errno value. */
  readonly errno: number;
  /** The errno's symbolic name, e.g. `"EMFILE"`, or `"E<number>"` if unknown. */
  readonly errnoName: string;

  /** Creates the error; `hint` says what the caller can do about it. */
  constructor(call: string, errno: number, errnoName: string, hint?: string) {
    super(
      "SYSTEM_CALL",
      `${call} failed: ${errnoName} (${errno})${hint ? `: ${hint}` : ""}`,
    );
    this.call = call;
    this.errno = errno;
    this.errnoName = errnoName;
  }
}

/**
 * A Mach, bootstrap, IOSurface or CoreVideo call failed (macOS). Carries the
 * call, its `kern_return_t` / `CVReturn` / `IOReturn` value and its name.
 */
export class MachError extends SurfaceportError {
  /** The failing function, e.g. `"mach_msg"` or `"bootstrap_look_up"`. */
  readonly call: string;
  /** The raw return value (`kern_return_t`, `CVReturn`, `IOReturn`, bootstrap status). */
  readonly kernReturn: number;
  /** The value's symbolic name, e.g. `"MACH_SEND_INVALID_DEST"`. */
  readonly kernReturnName: string;

  /** Creates the error; `hint` says what the caller can do about it. */
  constructor(call: string, kernReturn: number, kernReturnName: string, hint?: string) {
    super(
      "MACH",
      `${call} failed: ${kernReturnName} (0x${(kernReturn >>> 0).toString(16)})${
        hint ? `: ${hint}` : ""
      }`,
    );
    this.call = call;
    this.kernReturn = kernReturn;
    this.kernReturnName = kernReturnName;
  }
}

/** Why a received message was rejected. */
export type ProtocolErrorReason =
  | "SHORT_MESSAGE"
  | "BAD_MAGIC"
  | "BAD_VERSION"
  | "BAD_TYPE"
  | "BAD_HEADER"
  | "BAD_GEOMETRY"
  | "TOO_LARGE"
  | "BAD_META"
  | "NO_HANDLE"
  | "EXTRA_HANDLES"
  | "CONTROL_TRUNCATED"
  | "MESSAGE_TRUNCATED"
  | "NOT_SHARED_MEMORY"
  | "UNSEALED"
  | "WRITE_SEALED"
  | "SIZE_MISMATCH"
  | "BAD_ACCESS"
  | "NO_PERMISSION"
  | "HUGE_PAGES"
  | "UNMAPPABLE"
  | "BAD_CONTROL";

/**
 * A peer sent something that is not a valid surfaceport message. Every
 * descriptor or port that came with it has been closed; the channel stays
 * usable (the next `receive()` reads the next message).
 */
export class ProtocolError extends SurfaceportError {
  /** Which check failed. */
  readonly reason: ProtocolErrorReason;

  /** Creates the error for a failed check. */
  constructor(reason: ProtocolErrorReason, message: string) {
    super("PROTOCOL", `${reason}: ${message}`);
    this.reason = reason;
  }
}

/** The handle (surface, channel, listener, pool) was closed before or during the call. */
export class ClosedError extends SurfaceportError {
  /** Creates the error naming the closed thing and the attempted operation. */
  constructor(what: string, operation: string) {
    super("CLOSED", `${operation}: the ${what} is closed`);
  }
}

/** The other end of a channel went away (closed, exited or was killed). */
export class PeerClosedError extends SurfaceportError {
  /** Creates the error. */
  constructor(message = "the peer closed the channel") {
    super("PEER_CLOSED", message);
  }
}

/** Credentials of a peer, as the kernel reports them (`SO_PEERCRED` / audit trailer). */
export interface PeerCredentials {
  /** The peer's process id. */
  pid: number;
  /** The peer's effective user id. */
  uid: number;
  /** The peer's effective group id. */
  gid: number;
  /**
   * macOS only: the peer's pid version (`audit_token_t.val[7]`, what
   * libbsm's `audit_token_to_pidversion` reads). The kernel bumps it each
   * time a pid is reused, so `pid` and `pidVersion` together name one
   * process; a check of `pid` alone can admit whatever process got the pid
   * after the one meant exited. Absent on Linux.
   */
  pidVersion?: number;
}

/** `connect()` reached a listener whose credentials the `allowPeer` check refused. */
export class PeerRefusedError extends SurfaceportError {
  /** The refused peer. */
  readonly peer: PeerCredentials;

  /** Creates the error for a refused peer. */
  constructor(peer: PeerCredentials, message: string) {
    super("PEER_REFUSED", message);
    this.peer = peer;
  }
}

/** A bounded wait (`timeout` option) ran out. */
export class TimeoutError extends SurfaceportError {
  /** The operation that timed out, e.g. `"receive"`. */
  readonly operation: string;

  /** Creates the error for `operation` after `ms` milliseconds. */
  constructor(operation: string, ms: number) {
    super("TIMEOUT", `${operation} timed out after ${ms} ms`);
    this.operation = operation;
  }
}

/**
 * `SurfacePool.acquire()` found every surface in use (here or in another
 * process) with `maxSurfaces` reached, and none came back in time.
 */
export class PoolExhaustedError extends SurfaceportError {
  /** Creates the error. */
  constructor(message: string) {
    super("POOL_EXHAUSTED", message);
  }
}

/** `unlock()` without a matching `lock()`, or a lock mode mismatch. */
export class LockStateError extends SurfaceportError {
  /** Creates the error. */
  constructor(message: string) {
    super("LOCK_STATE", message);
  }
}

/** The platform, architecture or runtime cannot run surfaceport. */
export class UnsupportedError extends SurfaceportError {
  /** Creates the error. `code` distinguishes an old Deno from an unsupported platform. */
  constructor(message: string, code: "UNSUPPORTED" | "DENO_TOO_OLD" = "UNSUPPORTED") {
    super(code, message);
  }
}

/**
 * The macOS shim reports struct sizes, offsets or constants that differ from
 * the tables the TypeScript writes with: running would corrupt memory, so
 * surfaceport refuses to.
 */
export class AbiMismatchError extends SurfaceportError {
  /** Each mismatch as `"name: expected X, shim says Y"`. */
  readonly mismatches: readonly string[];

  /** Creates the error from the list of mismatches. */
  constructor(mismatches: readonly string[]) {
    super("ABI_MISMATCH", `native ABI self-check failed: ${mismatches.join("; ")}`);
    this.mismatches = mismatches;
  }
}

/** A native library (libc, a framework or the macOS shim) could not be loaded. */
export class LibraryLoadError extends SurfaceportError {
  /** Creates the error; `cause` is the runtime's `dlopen` failure. */
  constructor(message: string, options?: ErrorOptions) {
    super("LIBRARY_LOAD", message, options);
  }
}

/** Throws `signal.reason` if the signal is already aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}
