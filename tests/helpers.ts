/**
 * Shared test helpers: descriptor counts, unique channel names, and child
 * processes that are always killed and awaited.
 *
 * @module
 */

import { killedWithParent } from "../cli/gst_launch.ts";
import { libc } from "../ffi/linux.ts";
import {
  type Channel,
  type ChannelOptions,
  connect,
  listen,
  type Listener,
  type Surface,
} from "../mod.ts";
import { cString, ERRNO, openProcFdDirectory, readErrno } from "../src/linux/libc.ts";
import { openPollerControlFd } from "../src/linux/poller.ts";
import { bellTower } from "../src/linux/bell_tower.ts";
import { setDoorbellEnabled } from "../src/linux/doorbell.ts";

// The doorbell (src/linux/doorbell.ts, off by default) is on in every test process, so that the
// suite runs both ways of parking: with peers that ring (bell_peer.ts, c_peer.c produce-ring) and
// with peers that do not (every other peer process). Its listener opens with the first channel or
// listener and closes with the last, and Deno lets go of a listener's descriptor only a turn of
// the event loop after close(): held open from here for the whole test process, it is there
// before any test starts, and descriptor baselines and resource sanitizers see it as the
// process's own.
if (Deno.build.os === "linux") {
  setDoorbellEnabled(true);
  bellTower.acquire();
}

/** Paints a BGRA `surface` opaque, pixel (x, y) in `colour(x, y)` (red, green, blue). */
export function paintBGRA(
  surface: Surface,
  colour: (x: number, y: number) => readonly [number, number, number],
): void {
  const bytes = surface.bytes();
  const stride = surface.planes[0].bytesPerRow;
  for (let y = 0; y < surface.height; y++) {
    for (let x = 0; x < surface.width; x++) {
      const [r, g, b] = colour(x, y);
      const i = y * stride + x * 4;
      bytes[i] = b;
      bytes[i + 1] = g;
      bytes[i + 2] = r;
      bytes[i + 3] = 255;
    }
  }
}

/**
 * Removes the directories in `parent` named `PREFIX<pid>` or `PREFIX<pid>-...`
 * whose process is gone: what test processes killed outright (SIGKILL, a
 * timeout: no `finally` or unload ran) left behind. A live pid's, or this
 * process's, stays.
 */
export function removeDeadProcessesDirs(parent: string, prefix: string): void {
  let names: string[];
  try {
    names = [...Deno.readDirSync(parent)].map((entry) => entry.name);
  } catch {
    return; // no such directory: nothing left there
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = /^(\d+)(?:-|$)/.exec(name.slice(prefix.length))?.[1];
    if (pid === undefined || Number(pid) === Deno.pid) continue;
    // Alive (or the pid was taken again): leave it.
    if (!processAlive(Number(pid))) Deno.removeSync(`${parent}/${name}`, { recursive: true });
  }
}

/**
 * Whether process `pid` exists: false only if `/proc/PID` is not there
 * (ENOENT). Asked through libc: Deno refuses `Deno.stat("/proc/PID")`
 * without --allow-all (NotCapable), and a check that took that refusal for
 * "gone" removed the live directories, sockets and namespaces of every
 * other test process running beside it (two suites at once: a PipeWire
 * client that could not connect, a bridge's socket gone).
 */
export function processAlive(pid: number): boolean {
  const lib = libc();
  const fd = lib.open(cString(`/proc/${pid}`), 0o2000000, /* O_RDONLY | O_CLOEXEC */ 0);
  if (fd >= 0) {
    lib.close(fd);
    return true;
  }
  return readErrno() !== ERRNO.ENOENT;
}

/**
 * A new temporary directory named after this process (`PREFIX<pid>-…`), for
 * a test that may be killed before its `finally` removes it: one that a dead
 * test process left is removed first.
 */
export async function processTempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `${prefix}${Deno.pid}-` });
  removeDeadProcessesDirs(dir.slice(0, dir.lastIndexOf("/")), prefix);
  return dir;
}

/** Highest descriptor number the counters look at. */
const FD_SCAN_LIMIT = 65536;

/** The open descriptors of this process (asked with fcntl(F_GETFD): Deno guards /proc/self/fd). */
export function openFds(): number[] {
  const lib = libc();
  const fds: number[] = [];
  for (let fd = 0; fd < FD_SCAN_LIMIT; fd++) {
    if (lib.fcntl(fd, 1, /* F_GETFD */ 0) >= 0) fds.push(fd);
  }
  return fds;
}

/** How many descriptors this process has open. */
export function fdCount(): number {
  return openFds().length;
}

/**
 * The lines of `/proc/self/maps` that map a memfd named `name` (surfaceport
 * names its memfds `surfaceport`): one per mapping this process holds. Read
 * through libc because Deno asks for --allow-all to read `/proc/self/maps`.
 */
export function memfdMappings(name = "surfaceport"): string[] {
  const lib = libc();
  const fd = lib.open(cString("/proc/self/maps"), 0o2000000, /* O_RDONLY | O_CLOEXEC */ 0);
  if (fd < 0) throw new Error("open(/proc/self/maps) failed");
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const chunk = new Uint8Array(65536);
      const got = Number(lib.read(fd, chunk, BigInt(chunk.length)));
      if (got < 0) throw new Error("read(/proc/self/maps) failed");
      if (got === 0) break;
      chunks.push(chunk.subarray(0, got));
    }
  } finally {
    lib.close(fd);
  }
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  return text.split("\n").filter((line) => line.includes(`/memfd:${name} `));
}

/** The descriptors open now that were not in `baseline`, with what they are, for leak messages. */
export function fdTargets(baseline: number[] = []): string[] {
  const known = new Set(baseline);
  return openFds().filter((fd) => !known.has(fd)).map((fd) => {
    try {
      return `${fd} -> ${Deno.readLinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd}`;
    }
  });
}

/**
 * Opens the two descriptors surfaceport keeps for the life of the process
 * once used — the `/proc/self/fd` directory that reopening goes through, and
 * the shared poll's control eventfd — so that a descriptor baseline taken
 * afterwards does not count them as leaks.
 */
export function openLibraryProcessFds(): void {
  if (Deno.build.os !== "linux") return;
  openProcFdDirectory();
  openPollerControlFd();
}

/**
 * Makes Deno open now the descriptors it otherwise opens by itself about
 * 0.5 s after start (later on a loaded machine), opens surfaceport's
 * process-lifetime ones ({@link openLibraryProcessFds}), and waits until the
 * process is 800 ms old, so that fd-count baselines are stable.
 */
export async function settleRuntimeFds(): Promise<void> {
  openRuntimeSignalFds();
  const age = performance.now();
  if (age < 800) await sleep(800 - age);
  openLibraryProcessFds();
}

/**
 * Deno's late descriptors are its signal driver's socket pair, made once, at
 * the first signal listener of the process (its own comes ~0.5 s after start,
 * or later under load). Adding and removing a listener makes them now.
 * SIGURG is ignored by default, so a listener for it changes no behaviour.
 */
function openRuntimeSignalFds(): void {
  const ignore = () => {};
  Deno.addSignalListener("SIGURG", ignore);
  Deno.removeSignalListener("SIGURG", ignore);
}

/**
 * Runs `body` between two looks at this process's descriptors (the first
 * after {@link settleRuntimeFds}) and fails, listing them, if any it opened
 * is still open.
 */
export async function assertNoFdLeak(
  body: () => Promise<void>,
  what = "descriptors leaked",
): Promise<void> {
  await settleRuntimeFds();
  const baseline = openFds();
  await body();
  // Deno lets go of a socket closed under a pending read (the doorbell's) a turn or two later.
  let leaked = fdTargets(baseline);
  for (let turn = 0; leaked.length && turn < 20; turn++) {
    await sleep(5);
    leaked = fdTargets(baseline);
  }
  if (leaked.length) throw new Error(`${what}: ${leaked.join(", ")}`);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let counter = 0;
/** A channel name unique to this process and call. */
export function uniqueName(prefix = "t"): string {
  return `${prefix}-${Deno.pid}-${counter++}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Runs the garbage collector (tests run with --expose-gc) and lets finalizers run. */
export async function collectGarbage(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run the tests with --v8-flags=--expose-gc");
  for (let i = 0; i < 4; i++) {
    gc();
    await sleep(10);
  }
}

/** Polls `condition` every 10 ms until it holds or `ms` pass. */
export async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** An abort signal that fires when a count stops growing; disposing stops watching. */
export interface StallWatchdog extends Disposable {
  readonly signal: AbortSignal;
}

/**
 * Aborts its signal (with an Error naming `what`) when `progress()` has not
 * grown for `ms`: bounds a long, CPU-bound operation by its stalls rather
 * than by a total that a loaded machine stretches.
 */
export function stallWatchdog(progress: () => number, ms: number, what: string): StallWatchdog {
  const controller = new AbortController();
  let last = progress();
  let since = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const current = progress();
    if (current !== last) {
      last = current;
      since = now;
    } else if (now - since > ms) {
      clearInterval(timer);
      controller.abort(new Error(`${what}: no progress in ${ms} ms (stuck at ${current})`));
    }
  }, Math.min(ms, 100));
  return { signal: controller.signal, [Symbol.dispose]: () => clearInterval(timer) };
}

/** A child process with line-oriented stdout. */
export class Child implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: string[] = [];
  readonly #waiters: (() => void)[] = [];
  #stderr = "";
  readonly #done: Promise<void>;
  #ended = false;

  constructor(command: string, args: string[], env?: Record<string, string>) {
    // Killed if this test process dies without disposing of it (a timeout's SIGKILL, a crash):
    // a daemon left running would load every later test.
    const [file, argv] = killedWithParent(command, args);
    this.process = new Deno.Command(file, {
      args: argv,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#done = Promise.all([this.#pump(), this.#pumpErr()]).then(() => {
      this.#ended = true;
      this.#waiters.splice(0).forEach((w) => w());
    });
  }

  async #pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of this.process.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        this.#lines.push(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
        this.#waiters.splice(0).forEach((w) => w());
      }
    }
  }

  async #pumpErr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.process.stderr) {
      this.#stderr += decoder.decode(chunk, { stream: true });
    }
  }

  /** Everything the child wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** The stdout lines no {@link line} has consumed yet. */
  get unreadLines(): string {
    return this.#lines.join("\n");
  }

  /** Waits for the next stdout line matching `pattern` (consuming earlier lines). */
  async line(pattern: RegExp | string, ms = 20000): Promise<string> {
    const end = performance.now() + ms;
    for (;;) {
      while (this.#lines.length) {
        const line = this.#lines.shift()!;
        if (typeof pattern === "string" ? line.includes(pattern) : pattern.test(line)) return line;
      }
      if (this.#ended) {
        throw new Error(`child exited before printing ${pattern}; stderr:\n${this.#stderr}`);
      }
      const remaining = end - performance.now();
      if (remaining <= 0) {
        throw new Error(`timed out waiting for ${pattern}; stderr:\n${this.#stderr}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }

  /** Writes one line to the child's stdin. */
  async send(line: string): Promise<void> {
    const writer = this.process.stdin.getWriter();
    try {
      await writer.write(new TextEncoder().encode(line + "\n"));
    } finally {
      writer.releaseLock();
    }
  }

  /** Waits for the child to exit by itself (bounded), returning its status. */
  async exit(ms = 20000): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`child did not exit in ${ms} ms; stderr:\n${this.#stderr}`)),
        ms,
      );
    });
    try {
      return await Promise.race([this.process.status, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the child (if still running) and awaits it and its pipes. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // already exited
    }
    try {
      await this.process.stdin.close();
    } catch {
      // already closed
    }
    await this.process.status;
    await this.#done;
  }
}

/**
 * Keeps a child process alive until it is killed. A never-settling promise
 * alone keeps nothing alive in Deno (the process exits, or reports a
 * top-level await that never resolved): a long timer does.
 */
export function holdUntilKilled(): Promise<never> {
  return new Promise<never>(() => {
    setInterval(() => {}, 1 << 30);
  });
}

/** The CLI's entry point. */
export const CLI: string = new URL("../cli/main.ts", import.meta.url).pathname;
/** `deno run` and the permissions of the CLI's commands under test (preview serves 127.0.0.1). */
export const CLI_FLAGS = [
  "run",
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net=127.0.0.1",
];

/** Deno permission flags the peer scripts need. */
export const PEER_FLAGS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];

/** What a finished `deno run` printed, and how it exited. */
export interface ScriptOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deno run FLAGS SCRIPT ARGS` from the repository root (`script` is
 * relative to it) and waits for it to exit; SIGKILLed after `ms`.
 */
export async function runRepoScript(
  flags: string[],
  script: string,
  args: string[] = [],
  ms = 60000,
): Promise<ScriptOutput> {
  // Killed with this test process too, as a Child is (a script left waiting would outlive it).
  const [file, argv] = killedWithParent(Deno.execPath(), ["run", ...flags, script, ...args]);
  const child = new Deno.Command(file, {
    args: argv,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const { code, stdout, stderr } = await child.output();
    const text = new TextDecoder();
    return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** The permission flags the examples run with. */
export const EXAMPLE_FLAGS = [...PEER_FLAGS, "--allow-run"];

/** Spawns `deno run` on a script under tests/peers/ with `args`. */
export function spawnPeer(script: string, args: string[]): Child {
  const path = new URL(`./peers/${script}`, import.meta.url).pathname;
  return new Child(Deno.execPath(), ["run", ...PEER_FLAGS, path, ...args]);
}

/** `surfaceport ARGS` (`deno run cli/main.ts` with the peer scripts' permissions) as a child. */
export function cli(args: string[]): Child {
  return new Child(Deno.execPath(), ["run", ...PEER_FLAGS, CLI, ...args]);
}

/** A listener and one connected channel pair in this process; disposing closes all three. */
export interface ChannelPair extends Disposable {
  listener: Listener;
  client: Channel;
  server: Channel;
}

/** Listens under a fresh name, connects to it and accepts: both ends of one channel. */
export async function pair(options: ChannelOptions = {}): Promise<ChannelPair> {
  const name = uniqueName("pair");
  const listener = listen(name, options);
  const accepted = listener.accept();
  const client = await connect(name, { timeout: 2000, ...options });
  const server = await accepted;
  return {
    listener,
    client,
    server,
    [Symbol.dispose]() {
      client.close();
      server.close();
      listener.close();
    },
  };
}
