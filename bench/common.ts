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

type ProfileNode = {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
};

/** Bytes one function allocated itself when called from `caller`, in a sampled profile. */
interface AllocationSite {
  name: string;
  caller: string;
  bytes: number;
}

function subtreeBytes(node: ProfileNode): number {
  let bytes = node.selfSize;
  for (const child of node.children) bytes += subtreeBytes(child);
  return bytes;
}

/** `name file:line` of a sampled frame (the file's last two path parts; the function's line). */
function frameName({ functionName, url, lineNumber }: ProfileNode["callFrame"]): string {
  const file = url.split("/").slice(-2).join("/");
  return `${functionName || "(anonymous)"}${file ? ` ${file}:${lineNumber + 1}` : ""}`;
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
  #sites: AllocationSite[] = [];
  #head: ProfileNode | undefined;

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
    const { profile } = await this.#post("HeapProfiler.stopSampling");
    const sites = new Map<string, AllocationSite>();
    let total = 0;
    const visit = (node: ProfileNode, caller: string): void => {
      const name = frameName(node.callFrame);
      if (node.selfSize > 0) {
        const key = `${name} <- ${caller}`;
        const site = sites.get(key);
        if (site) site.bytes += node.selfSize;
        else sites.set(key, { name, caller, bytes: node.selfSize });
        total += node.selfSize;
      }
      for (const child of node.children) visit(child, name);
    };
    this.#head = (profile as { head: ProfileNode }).head;
    visit(this.#head, "(root)");
    this.#sites = [...sites.values()].sort((a, b) => b.bytes - a.bytes);
    return total;
  }

  /**
   * The bytes of the last {@link stop} that belong to the code of `file`
   * (a URL suffix: the measuring test itself): what its frames allocated
   * themselves, and everything under a frame of it that code under `src/`
   * called (a callback: a sink's `send`, an `onReleased`). What `file`'s
   * frames call is theirs only then: a test's loop calling the library
   * measures the library.
   */
  bytesFrom(file: string): number {
    const walk = (node: ProfileNode, underSrc: boolean): number => {
      const url = node.callFrame.url;
      if (url.endsWith(file)) {
        if (underSrc) return subtreeBytes(node);
        let bytes = node.selfSize;
        for (const child of node.children) bytes += walk(child, false);
        return bytes;
      }
      const src = underSrc || url.includes("/src/");
      let bytes = 0;
      for (const child of node.children) bytes += walk(child, src);
      return bytes;
    };
    return this.#head ? walk(this.#head, false) : 0;
  }

  /**
   * Where the last {@link stop}'s bytes were allocated, most first: one line
   * per call site (function, file:line, and its caller), with its bytes
   * divided by `per` (e.g. the frames of the window).
   */
  top(count = 12, per = 1): string[] {
    return this.#sites.slice(0, count).map(({ name, caller, bytes }) =>
      `${(bytes / per).toFixed(1).padStart(8)} B  ${name} <- ${caller}`
    );
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
