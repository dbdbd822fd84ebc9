/**
 * The receiving side of the doorbell (`doorbell.ts`; normative: "Doorbell"
 * in `docs/protocol.md`), the part that runs on the runtime's own reactor:
 * this process's listener at `DIR/bell-PID` (the {@link BellTower}: one
 * `Deno.listen` / `node:net` server per process, open while any endpoint
 * may be rung), which reads each new stream's HELLO and binds it to the
 * channel whose DOORBELL named the same token, and each channel's
 * {@link Bell}, on which a parked receive waits for a ring.
 *
 * Everything here is bounded against strangers: a stream has 2 s for its
 * HELLO and 10 s for its DOORBELL, at most 64 wait, and a ring is only ever
 * a hint to try the channel again.
 *
 * @module
 */

import { type ReactorListener, type ReactorStream, runtime } from "../../ffi/runtime.ts";
import { TimeoutError } from "../core/errors.ts";
import { BELL_HELLO_SIZE, decodeBellHello, tokenKey } from "../wire/doorbell_wire.ts";
import { bellDirectory, doorbellEnabled, doorbellStats, encoder, SOCK_STREAM } from "./doorbell.ts";
import { closeQuietly, ERRNO, libc, readErrno } from "./libc.ts";
import { encodeSockaddrUn, LINUX } from "./structs.ts";

/** How long an accepted stream may take to present its HELLO. */
const HELLO_TIMEOUT_MS = 2000;
/** How long a presented token waits for its DOORBELL on a channel. */
const CLAIM_TIMEOUT_MS = 10_000;
/** At most this many accepted streams wait for their HELLO or their channel (the oldest go). */
const MAX_WAITING = 64;

/** A wait parked on a bell with a deadline. */
interface TimedWait {
  readonly deadline: number;
  /** Rejects the wait with its `TimeoutError`. */
  expire(): void;
}

/**
 * The deadlines of every wait parked on a bell, watched by one timer for the
 * process: armed for the earliest, and left armed when a wait ends first
 * (it then fires once, finds nothing due, and re-arms only for a wait still
 * pending). A `setTimeout` and `clearTimeout` per park cost ~4 µs in Deno,
 * as much as the rest of the park; the shared poll pays none (its deadline
 * is `poll`'s timeout). The timer never keeps the process alive: a pending
 * wait's read does.
 */
class DeadlineWatch {
  readonly #waits = new Set<TimedWait>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedFor = Infinity;

  add(wait: TimedWait): void {
    this.#waits.add(wait);
    if (wait.deadline < this.#armedFor) this.#arm(wait.deadline);
  }

  delete(wait: TimedWait): void {
    this.#waits.delete(wait);
  }

  #arm(deadline: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedFor = deadline;
    doorbellStats.deadlineTimers++;
    this.#timer = setTimeout(this.#fire, Math.max(0, deadline - performance.now()));
    runtime.unrefTimer(this.#timer);
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#armedFor = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const wait of this.#waits) {
      if (wait.deadline <= now) {
        this.#waits.delete(wait);
        wait.expire();
      } else if (wait.deadline < next) {
        next = wait.deadline;
      }
    }
    if (next !== Infinity) this.#arm(next);
  };
}

const deadlines = new DeadlineWatch();

/** What a read that could not start returns. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * The receiving end of one channel's doorbell: a parked wait is one read on
 * the runtime's own stream connection. Rings are coalesced by reading: one
 * read takes every unread ring (up to 64), so a burst wakes a parked
 * receiver once, and rings that came while it was busy make its next park
 * return at once (it then finds the frames, or nothing, and parks again).
 */
export class Bell {
  readonly #conn: ReactorStream;
  readonly #buffer = new Uint8Array(64);
  #read: Promise<void> | undefined;
  #waiters = 0;
  #ended = false;
  #closed = false;
  #claimed = false;

  constructor(conn: ReactorStream) {
    this.#conn = conn;
    conn.unref(); // only a pending wait keeps the process alive
  }

  /** False once the ringer hung up or the bell was closed: park elsewhere. */
  get live(): boolean {
    return !this.#ended;
  }

  /**
   * Resolves at the next ring (at once if rings are unread), when the ringer
   * hangs up, or when the bell is closed; rejects with a `TimeoutError` at
   * `deadline` (ms, `performance.now()` clock) or with the abort reason.
   */
  wait(operation: string, deadline: number, signal?: AbortSignal): Promise<void> {
    const read = this.#read ??= this.#readRings();
    if (this.#waiters++ === 0) this.#conn.ref();
    if (deadline === Infinity && signal === undefined) return read;
    const remaining = deadline - performance.now();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (error?: unknown) => {
        if (settled) return;
        settled = true;
        if (timed !== undefined) deadlines.delete(timed);
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) return resolve();
        if (--this.#waiters === 0 && this.#read !== undefined) this.#conn.unref();
        reject(error);
      };
      const onAbort = () => settle(signal!.reason);
      const timed: TimedWait | undefined = deadline === Infinity ? undefined : {
        deadline,
        expire: () => settle(new TimeoutError(operation, Math.round(remaining))),
      };
      if (timed !== undefined) deadlines.add(timed);
      signal?.addEventListener("abort", onAbort, { once: true });
      read.then(() => settle());
    });
  }

  /**
   * One read of the rings, shared by the waits parked meanwhile. Not an
   * async function: a park per frame costs the read's `then`, not a
   * suspended frame (~300 B per frame, issue 20).
   */
  #readRings(): Promise<void> {
    try {
      return this.#conn.read(this.#buffer).then(this.#ringsRead, this.#readFailed);
    } catch {
      this.#readFailed();
      return SETTLED;
    }
  }

  readonly #ringsRead = (count: number | null): void => {
    if (count === null) this.#ended = true;
    this.#readEnded();
  };

  readonly #readFailed = (): void => {
    this.#ended = true; // closed under the read, or reset
    this.#readEnded();
  };

  #readEnded(): void {
    this.#read = undefined;
    this.#waiters = 0;
  }

  /**
   * While no channel has claimed this bell: reads (without keeping the
   * process alive) until the ringer hangs up, then calls `onEnd`, so that a
   * stream whose DOORBELL never comes holds no descriptor past its ringer.
   * Returns when a channel claims it ({@link claimed}) or it ends.
   */
  async watchUnclaimed(onEnd: () => void): Promise<void> {
    while (!this.#ended && !this.#claimed) await (this.#read ??= this.#readRings());
    if (this.#ended && !this.#claimed) onEnd();
  }

  /** A channel took this bell: {@link watchUnclaimed} stops. */
  claimed(): void {
    this.#claimed = true;
  }

  /** Closes the stream; a pending wait resolves. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    closeConn(this.#conn);
  }
}

interface Claim {
  /** A stream that presented the token, waiting for its channel's DOORBELL. */
  bell?: Bell;
  timer?: ReturnType<typeof setTimeout>;
  /** A channel whose DOORBELL named the token, waiting for its stream. */
  bind?: (bell: Bell) => void;
}

/**
 * This process's doorbell listener, open while any channel endpoint or
 * listener of this process may be rung ({@link acquire} / {@link release}).
 * Where it cannot be opened (no `--allow-read`/`--allow-write` for its
 * directory, a directory that is not this user's alone) there is none, and
 * peers fall back to the shared `poll`. Deno asks for `--allow-read`,
 * `--allow-write` and `--allow-net` (unrestricted: its net permission names
 * a Unix socket by its exact path, which holds our pid) to listen on a Unix
 * socket; ringing a peer needs none of them.
 */
class BellTower {
  #users = 0;
  #listener: ReactorListener | undefined;
  #path = "";
  readonly #claims = new Map<string, Claim>();
  /** Accepted streams that have not presented a HELLO yet, with their timers. */
  readonly #greeting = new Map<ReactorStream, ReturnType<typeof setTimeout>>();

  acquire(): void {
    if (this.#users++ === 0) this.#open();
  }

  release(): void {
    if (this.#users > 0 && --this.#users === 0) this.#close();
  }

  /** True while this process can be rung. */
  get open(): boolean {
    return this.#listener !== undefined;
  }

  #open(): void {
    if (!doorbellEnabled()) return;
    let dir: string;
    try {
      dir = bellDirectory();
    } catch {
      return;
    }
    const { files } = runtime;
    if (!files.mayAccess("read", dir) || !files.mayAccess("write", dir)) return; // never prompt
    try {
      files.makeDirectory(dir, 0o700);
      const info = files.lstat(dir);
      if (!info.isDirectory || info.uid !== libc().geteuid() || (info.mode & 0o077) !== 0) {
        return; // not ours alone: a stranger could reach the doorbell
      }
      const path = `${dir}/bell-${runtime.pid}`;
      if (isStale(path)) files.remove(path); // left by a process that had our pid and died
      const listener = runtime.listenUnix(path, (stream) => this.#greet(stream));
      if (listener === undefined) return; // without the permissions: the shared poll
      this.#listener = listener;
      this.#path = path;
    } catch {
      // no doorbell: every wait stays on the shared poll
    }
  }

  #close(): void {
    const listener = this.#listener;
    if (!listener) return;
    this.#listener = undefined;
    listener.close();
    try {
      runtime.files.remove(this.#path); // (Deno removes it itself; Node does not)
    } catch {
      // gone already
    }
    for (const [conn, timer] of this.#greeting) {
      clearTimeout(timer);
      closeConn(conn);
    }
    this.#greeting.clear();
    for (const claim of this.#claims.values()) {
      clearTimeout(claim.timer);
      claim.bell?.close();
    }
    this.#claims.clear();
  }

  /** Reads the HELLO of a new stream (bounded in time and number), then offers it. */
  async #greet(conn: ReactorStream): Promise<void> {
    conn.unref();
    if (this.#greeting.size >= MAX_WAITING) {
      const [oldest, timer] = this.#greeting.entries().next().value!;
      clearTimeout(timer);
      this.#greeting.delete(oldest);
      closeConn(oldest);
    }
    const timer = setTimeout(() => {
      this.#greeting.delete(conn);
      closeConn(conn);
    }, HELLO_TIMEOUT_MS);
    this.#greeting.set(conn, timer);
    let token: Uint8Array | undefined;
    try {
      const hello = new Uint8Array(BELL_HELLO_SIZE);
      let got = 0;
      while (got < BELL_HELLO_SIZE) {
        const n = await conn.read(hello.subarray(got));
        if (n === null) break;
        got += n;
      }
      if (got === BELL_HELLO_SIZE) token = decodeBellHello(hello);
    } catch {
      // closed meanwhile (timeout, or the tower closed)
    }
    if (!this.#greeting.has(conn)) return; // timed out or dropped: closed already
    clearTimeout(timer);
    this.#greeting.delete(conn);
    if (token === undefined) return closeConn(conn);
    this.#offer(tokenKey(token), new Bell(conn));
  }

  /** A stream presented `key`: bind it to the channel that claimed it, or keep it a while. */
  #offer(key: string, bell: Bell): void {
    const claim = this.#claims.get(key);
    if (claim?.bind) {
      this.#claims.delete(key);
      bell.claimed();
      claim.bind(bell);
      return;
    }
    if (claim || this.#claims.size >= MAX_WAITING) return bell.close(); // a second stream for one token
    const drop = () => {
      const waiting = this.#claims.get(key);
      if (waiting?.bell !== bell) return;
      clearTimeout(waiting.timer);
      this.#claims.delete(key);
      bell.close();
    };
    this.#claims.set(key, { bell, timer: setTimeout(drop, CLAIM_TIMEOUT_MS) });
    bell.watchUnclaimed(drop);
  }

  /**
   * A channel received a DOORBELL naming `token`: `bind` gets the stream
   * that presents it, now or when it comes. Returns a function that
   * withdraws the claim (the channel closed first).
   */
  claim(token: Uint8Array, bind: (bell: Bell) => void): () => void {
    if (!this.#listener) return noop; // nobody can have rung us
    const key = tokenKey(token);
    const claim = this.#claims.get(key);
    if (claim?.bell) {
      clearTimeout(claim.timer);
      this.#claims.delete(key);
      claim.bell.claimed();
      bind(claim.bell);
      return noop;
    }
    if (claim) return noop; // claimed by another channel already: ignore
    this.#claims.set(key, { bind });
    return () => {
      if (this.#claims.get(key)?.bind === bind) this.#claims.delete(key);
    };
  }
}

function noop(): void {}

function closeConn(conn: ReactorStream): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** True if a socket file is at `path` and nothing accepts connections on it. */
function isStale(path: string): boolean {
  const lib = libc();
  const fd = lib.socket(LINUX.AF_UNIX, SOCK_STREAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const address = encodeSockaddrUn(encoder.encode(path), false);
    return lib.connect(fd, address.bytes, address.length) !== 0 &&
      readErrno() === ERRNO.ECONNREFUSED;
  } finally {
    closeQuietly(fd);
  }
}

/** This process's doorbell listener. */
export const bellTower: BellTower = new BellTower();
