/**
 * Shared pieces of the benchmark: frame sizes, percentiles, and spawning a
 * child process that is always killed and awaited, with timeouts on every
 * wait.
 *
 * @module
 */

import { Session } from "node:inspector";
import v8 from "node:v8";

/** The frame sizes every latency benchmark runs, as [width, height] (BGRA, 4 bytes a pixel). */
export const SIZES: readonly (readonly [number, number])[] = [
  [640, 480],
  [1920, 1080],
  [3840, 2160],
];

/** `"WxH"`, the key results use for a frame size. */
export function sizeKey(width: number, height: number): string {
  return `${width}x${height}`;
}

/** The `p`-th percentile (0-100) of `samples` by the nearest-rank method on a sorted copy. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/**
 * Bytes V8 has allocated in this process since it started: cumulative, not
 * reset by garbage collection (`total_allocated_bytes`, which the node:v8
 * typings lack). Updated per allocation buffer, so read it over thousands of
 * operations, not one.
 */
export function allocatedBytes(): number {
  return (v8.getHeapStatistics() as unknown as { total_allocated_bytes: number })
    .total_allocated_bytes;
}

/**
 * V8's sampling heap profiler, counting what the JavaScript code allocates,
 * collected garbage included, and nothing else. `allocatedBytes()` also
 * counts what the garbage collector moves: a loop paced by timers leaves V8
 * idle time, whose collections then add kilobytes per frame that no code
 * allocated (measured: a subscriber's 4.1 KB per frame became 9.7 KB with
 * 0.7 s pauses in the stream; its sampled allocation stayed ~3.4 KB). An
 * estimate: each allocation is sampled with a probability proportional to
 * its size (one sample per `interval` bytes on average).
 */
export class SampledAllocation {
  readonly #session = new Session();
  #interval: number;

  constructor(interval = 64) {
    this.#interval = interval;
    this.#session.connect();
  }

  #post(method: string, params?: object): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) =>
      this.#session.post(
        method,
        params ?? {},
        (error, result) => error ? reject(error) : resolve(result as Record<string, unknown>),
      )
    );
  }

  /** Starts sampling (every allocation from now on, collected or not). */
  async start(): Promise<void> {
    await this.#post("HeapProfiler.enable");
    await this.#post("HeapProfiler.startSampling", {
      samplingInterval: this.#interval,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }

  /** Stops sampling: the bytes allocated since {@link start}, estimated. */
  async stop(): Promise<number> {
    return (await this.stopProfile()).total;
  }

  /** Stops sampling: the bytes allocated since {@link start} by allocating function, estimated. */
  async stopProfile(): Promise<AllocationProfile> {
    const { profile } = await this.#post("HeapProfiler.stopSampling");
    return new AllocationProfile((profile as { head: ProfileNode }).head);
  }

  /** Disconnects the inspector session. */
  close(): void {
    this.#session.disconnect();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** A node of V8's sampling heap profile (`HeapProfiler.SamplingHeapProfileNode`). */
interface ProfileNode {
  callFrame: { functionName: string; url: string };
  selfSize: number;
  children: ProfileNode[];
}

/** Bytes a function allocated itself (not its callees), as the profile attributes them. */
export interface AllocationSite {
  /** `name (file)`; `(anonymous)` for an unnamed function, a builtin's name alone. */
  where: string;
  bytes: number;
}

/**
 * A sampled allocation profile: the estimated total, and the bytes by the
 * JavaScript function that allocated them (a builtin's allocation, a
 * promise's, counts for the function that called it; what no JavaScript was
 * running for, the runtime's own, under V8's `(root)` or `(V8 API)`).
 */
export class AllocationProfile {
  /** The estimated bytes allocated while sampling. */
  readonly total: number;
  readonly #sites = new Map<string, number>();
  readonly #head: ProfileNode;

  constructor(head: ProfileNode) {
    this.#head = head;
    let total = 0;
    const visit = (node: ProfileNode): void => {
      total += node.selfSize;
      if (node.selfSize > 0) {
        const where = siteName(node.callFrame);
        this.#sites.set(where, (this.#sites.get(where) ?? 0) + node.selfSize);
      }
      for (const child of node.children) visit(child);
    };
    visit(head);
    this.total = total;
  }

  /** The `count` sites that allocated most, most first. */
  top(count = 8): AllocationSite[] {
    return [...this.#sites].map(([where, bytes]) => ({ where, bytes }))
      .sort((a, b) => b.bytes - a.bytes).slice(0, count);
  }

  /**
   * The bytes that belong to the code of the file whose URL ends with
   * `file` (the measuring test itself): what its functions allocated
   * themselves or through a builtin (a `Promise` it makes), and everything
   * under one of them that code under `src/` called (a callback: a sink's
   * `send`, an `onReleased`). What the file's own loop calls of the
   * library is the library's.
   */
  bytesFrom(file: string): number {
    const walk = (node: ProfileNode, underSrc: boolean): number => {
      const url = node.callFrame.url;
      if (url.endsWith(file)) {
        if (underSrc) return subtreeBytes(node);
        let bytes = node.selfSize;
        for (const child of node.children) {
          bytes += child.callFrame.url === "" ? subtreeBytes(child) : walk(child, false);
        }
        return bytes;
      }
      const src = underSrc || url.includes("/src/");
      let bytes = 0;
      for (const child of node.children) bytes += walk(child, src);
      return bytes;
    };
    return walk(this.#head, false);
  }

  /**
   * Bytes allocated by the code of files whose URL contains `part` (e.g.
   * `/src/`): by its functions and by the builtins they called (a `Promise`
   * one makes), less the code of files whose URL contains `except`, and
   * nothing under a function of the file `callbacks` (a URL suffix: the
   * measuring test) that code of `part` called back. The runtime's own
   * functions (a nonblocking call's promise) have files of their own.
   */
  bytesOf(part: string, except?: string, callbacks?: string): number {
    const walk = (node: ProfileNode, inherited: string): number => {
      const url = node.callFrame.url || inherited;
      if (callbacks && url.endsWith(callbacks) && inherited.includes(part)) return 0;
      let bytes = url.includes(part) && !(except && url.includes(except)) ? node.selfSize : 0;
      for (const child of node.children) bytes += walk(child, url);
      return bytes;
    };
    return walk(this.#head, "");
  }

  /**
   * Bytes allocated by the code of files whose URL contains `part` and by
   * everything it called, counted once: the builtins and the runtime's own
   * code (e.g. what a `setTimeout` makes) as well as other files of this
   * project, but nothing that merely called into `part`.
   */
  bytesUnder(part: string): number {
    const walk = (node: ProfileNode): number => {
      if (node.callFrame.url.includes(part)) return subtreeBytes(node);
      let bytes = 0;
      for (const child of node.children) bytes += walk(child);
      return bytes;
    };
    return walk(this.#head);
  }

  /** Bytes allocated by functions whose source URL contains `part` (e.g. a file name). */
  bytesIn(part: string): number {
    let bytes = 0;
    for (const [where, size] of this.#sites) if (where.includes(part)) bytes += size;
    return bytes;
  }

  /** The top sites as lines, in bytes per `per` (e.g. per frame), for a failed bound's message. */
  describe(per = 1, count = 8): string {
    return this.top(count).map(({ where, bytes }) =>
      `    ${(bytes / per).toFixed(1).padStart(8)} B  ${where}`
    ).join("\n");
  }
}

function subtreeBytes(node: ProfileNode): number {
  let bytes = node.selfSize;
  for (const child of node.children) bytes += subtreeBytes(child);
  return bytes;
}

function siteName(frame: ProfileNode["callFrame"]): string {
  const name = frame.functionName || "(anonymous)";
  if (!frame.url) return name; // (root), (V8 API), (GC)...
  // This project's files by their path in it, others (the runtime's) by their last name.
  const file = /\/((?:src|ffi|tests|bench)\/.*)$/.exec(frame.url)?.[1] ??
    frame.url.replace(/^.*\//, "");
  // (No line: the profile's are the function's in the runtime's transpiled JavaScript.)
  return `${name} (${file})`;
}

/** Limits for the backend's own connections (control messages only; no surface is sent). */
export const CONTROL_LIMITS = {
  maxSurfaceBytes: 1 << 20,
  maxMetaBytes: 4096,
  mappingCacheSize: 1,
  spinMicros: 0,
};

/** A 16-byte control message (its content is not looked at). */
export const CONTROL_MESSAGE: Uint8Array = new Uint8Array(16);

/** Rejects with a message naming `what` if `promise` takes longer than `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** True if `taskset` runs here (pinning is then possible). */
export async function hasTaskset(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("taskset", {
      args: ["-c", "0", "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** A spawned child process; {@link Child.stop} kills and awaits it (idempotent). */
export class Child {
  readonly #process: Deno.ChildProcess;
  readonly #stdout: ReadableStreamDefaultReader<string>;
  #buffered = "";
  #stopped: Promise<Deno.CommandStatus> | undefined;

  /** Spawns `command args`, under `taskset -c cpu` if `cpu` is given. */
  constructor(command: string, args: string[], cpu?: number) {
    const [program, argv] = cpu === undefined
      ? [command, args]
      : ["taskset", ["-c", String(cpu), command, ...args]];
    this.#process = new Deno.Command(program, {
      args: argv,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#stdout = this.#process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next line the child prints, within `ms`. */
  async readLine(ms: number): Promise<string> {
    const deadline = performance.now() + ms;
    for (;;) {
      const newline = this.#buffered.indexOf("\n");
      if (newline >= 0) {
        const line = this.#buffered.slice(0, newline);
        this.#buffered = this.#buffered.slice(newline + 1);
        return line;
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("child: no line within the timeout");
      const { value, done } = await withTimeout(this.#stdout.read(), left, "child output");
      if (done) throw new Error(`child exited before printing a line (${this.#buffered})`);
      this.#buffered += value;
    }
  }

  /** Waits up to `ms` for the child to exit by itself, then kills it; always awaits it. */
  stop(ms = 5000): Promise<Deno.CommandStatus> {
    this.#stopped ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = this.#process.status;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            this.#process.kill("SIGKILL");
          } catch {
            // already gone
          }
          resolve();
        }, ms);
      });
      await Promise.race([exited, killed]);
      clearTimeout(timer);
      this.#stdout.cancel().catch(() => {});
      return await exited;
    })();
    return this.#stopped;
  }
}

/**
 * Deno's own 1-byte stream ping-pong (`Deno.connect` to a `bench/peer.ts copy PATH 1` that
 * `spawnPeer` starts, no FFI): the wake-up through the runtime's reactor alone, beside the C
 * ping-pongs of `bench/floor.c`. Round trips in µs, after `warmup` untimed ones.
 */
export async function denoStreamPingPong(
  spawnPeer: (args: string[]) => Child,
  iterations: number,
  warmup: number,
  waitMs: number,
): Promise<number[]> {
  const path = await Deno.makeTempFile({ prefix: "surfaceport-bench-", suffix: ".sock" });
  await Deno.remove(path);
  const peer = spawnPeer(["copy", path, "1"]);
  try {
    await peer.readLine(waitMs);
    const conn = await Deno.connect({ transport: "unix", path });
    try {
      const ping = new Uint8Array(1);
      const pong = new Uint8Array(1);
      const samples: number[] = [];
      for (let i = -warmup; i < iterations; i++) {
        const t0 = performance.now();
        await conn.write(ping);
        if (await conn.read(pong) !== 1) throw new Error("stream peer hung up");
        if (i >= 0) samples.push((performance.now() - t0) * 1000);
      }
      return samples;
    } finally {
      conn.close();
    }
  } finally {
    await peer.stop();
    await Deno.remove(path).catch(() => {});
  }
}
