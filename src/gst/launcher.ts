/**
 * How the PipeWire and network bridges run GStreamer: a `gst-launch-1.0`
 * pipeline in a child process, joined to this process by the unixfd
 * bridges over an abstract socket. Starting processes is not part of the
 * runtime seam, so the caller hands in a {@link GstLauncher} (the command
 * line's is `cli/gst_launch.ts`); everything here is plain data.
 *
 * @module
 */

/** A running `gst-launch-1.0` (or anything that behaves like one). */
export interface GstProcess {
  /** Resolves with the exit code once the process ended (never rejects). */
  readonly exited: Promise<number>;
  /** The last lines the process wrote to stderr (GStreamer's ERROR lines), for messages. */
  readonly errorText: () => string;
  /** Kills the process (SIGTERM, then SIGKILL) and waits for it; idempotent. */
  stop(): Promise<void>;
}

/** Starts `gst-launch-1.0` with `args` (one pipeline description, split in words). */
export type GstLauncher = (args: readonly string[]) => GstProcess;

let counter = 0;

/** A fresh abstract socket address (`@name`) for one bridge ↔ pipeline link of this process. */
export function privateSocketName(kind: string): string {
  const random = Math.floor(Math.random() * 0x1_0000_0000).toString(16);
  return `@surfaceport-${kind}-${random}-${counter++}`;
}

/** The `unixfdsrc` / `unixfdsink` properties for an `@name` address. */
export function unixFdProperties(address: string): string[] {
  if (!address.startsWith("@")) throw new RangeError(`expected an @abstract address: ${address}`);
  return ["socket-type=abstract", `socket-path=${address.slice(1)}`];
}

/** Waits `ms`, or less when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * The first line of `text` that GStreamer marked as an error (the cause;
 * later ones are consequences), else its last line.
 */
export function lastError(text: string): string {
  const lines = text.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
  const error = lines.find((line) => /(^|\s)ERROR[\s:]/.test(line));
  return (error ?? lines.at(-1) ?? "").replace(/^\S+\s+\d+\s+0x[0-9a-f]+\s+/, "");
}
