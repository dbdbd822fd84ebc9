/**
 * The soak: `handoffs` frames from a {@link SurfacePool} in this process to
 * a consumer process (tests/soak/consumer.ts), sampling both processes'
 * descriptor counts and resident set sizes along the way, and judging
 * whether they stayed flat.
 *
 * Flat means, after a warm-up (the first quarter of the samples, when V8
 * and the allocator settle):
 *
 * - descriptors: each process's count varies by at most
 *   {@link FD_TOLERANCE}, plus, for the producer, one per pool surface: each
 *   surface keeps at most one spare description (reopened when the pool
 *   waits, used by the next send of it), there or not at a given sample;
 * - memory: neither the live V8 heap (after a full collection) nor the
 *   native part of RSS (RSS minus V8's heap) grows per handoff: the slope of
 *   a least-squares line through the samples after warm-up, in bytes per
 *   handoff, stays within {@link GROWTH_TOLERANCE_BYTES_PER_HANDOFF}. A slope,
 *   not a fixed allowance: a leak of a page per frame is a straight line
 *   that a fixed allowance lets through in a short run, while a one-off step
 *   (V8 or the allocator taking another arena) barely moves a slope over
 *   the whole run. RSS itself may grow by what V8 adds to its heap: under a
 *   high allocation rate V8 grows its young generation and old-space limits,
 *   which is sizing, not a leak — the live heap shows which it is. Without
 *   `--expose-gc` (no live samples) RSS itself is judged.
 *
 * @module
 */

import { listen, SurfacePool } from "../../mod.ts";
import { Child, fdCount, PEER_FLAGS } from "../helpers.ts";

/** How far a descriptor count may move after warm-up (beyond the producer's spares). */
export const FD_TOLERANCE = 2;
/**
 * How many bytes per handoff the live heap and native memory may grow by
 * (the fitted slope after warm-up): 1,000,000 handoffs at this rate would be
 * 24 MiB, so even a small per-frame leak fails a long run.
 */
export const GROWTH_TOLERANCE_BYTES_PER_HANDOFF = 24;

/** One measurement of one process. */
export interface Sample {
  handoffs: number;
  fds: number;
  rss: number;
  /** V8's heap size (`heapTotal`): the part of RSS that garbage collection sizes. */
  heap: number;
  /**
   * What the V8 heap holds right after a full collection (`heapUsed` after
   * `gc()`, when the process runs with `--expose-gc`; else NaN): the live
   * objects. A leak grows this; V8 sizing its heap up does not.
   */
  live: number;
}

/** `heapUsed` right after a full garbage collection, or NaN without `--expose-gc`. */
export function liveHeapBytes(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return NaN;
  gc();
  return Deno.memoryUsage().heapUsed;
}

/** What a soak run measured and concluded. */
export interface SoakReport {
  handoffs: number;
  seconds: number;
  producer: Sample[];
  consumer: Sample[];
  corrupt: number;
  /** Every way the run was not flat; empty if it was. */
  problems: string[];
  /** The growth tolerance used, in bytes per handoff. */
  growthTolerance: number;
  /** The fitted growth of each process (undefined with too few samples). */
  growth: { producer: Growth | undefined; consumer: Growth | undefined };
}

/** Options of {@link runSoak}. */
export interface SoakOptions {
  handoffs: number;
  /** Samples per process (default 40). */
  samples?: number;
  width?: number;
  height?: number;
  maxSurfaces?: number;
  /**
   * The consumer channel's `mappingCacheSize` (default the channel's own,
   * more than the pool's surfaces: every frame after the first few is a
   * hit). 0 maps and unmaps every frame: the path of a surface the cache
   * does not keep.
   */
  consumerMappingCacheSize?: number;
  /**
   * How many bytes per handoff memory may grow by (default
   * {@link GROWTH_TOLERANCE_BYTES_PER_HANDOFF}).
   */
  growthToleranceBytesPerHandoff?: number;
  /** Called with a progress line after each sample. */
  progress?: (line: string) => void;
}

/** The least-squares slope of `y` over `x`. */
export function slope(x: number[], y: number[]): number {
  const n = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

/** Per-handoff growth of what {@link judge} looks at, fitted after warm-up (bytes per handoff). */
export interface Growth {
  live: number;
  native: number;
  rss: number;
}

function judge(
  who: string,
  samples: Sample[],
  growthTolerance: number,
  fdTolerance: number,
  problems: string[],
): Growth | undefined {
  if (samples.length < 4) {
    problems.push(`${who}: only ${samples.length} samples`);
    return undefined;
  }
  const warm = samples.slice(0, Math.max(1, Math.floor(samples.length / 4)));
  const rest = samples.slice(warm.length);
  const fds = rest.map((s) => s.fds);
  const fdBase = warm.at(-1)!.fds;
  const fdSpread = Math.max(...fds, fdBase) - Math.min(...fds, fdBase);
  if (fdSpread > fdTolerance) {
    problems.push(`${who}: descriptor count moved by ${fdSpread} (${fdBase} -> ${fds.join(", ")})`);
  }
  const handoffs = rest.map((s) => s.handoffs);
  const growth: Growth = {
    live: slope(handoffs, rest.map((s) => s.live)),
    native: slope(handoffs, rest.map((s) => s.rss - s.heap)),
    rss: slope(handoffs, rest.map((s) => s.rss)),
  };
  const grew = (what: string, perHandoff: number) => {
    if (perHandoff > growthTolerance) {
      problems.push(
        `${who}: ${what} grew by ${perHandoff.toFixed(0)} B per handoff after warm-up ` +
          `(tolerance ${growthTolerance} B)`,
      );
    }
  };
  if (samples.every((s) => Number.isFinite(s.live))) {
    grew("the live V8 heap", growth.live);
    grew("native memory (RSS minus the V8 heap)", growth.native);
  } else {
    grew("RSS", growth.rss);
  }
  return growth;
}

function mib(bytes: number): string {
  if (Number.isNaN(bytes)) return "-";
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** Runs the soak; never throws for a non-flat result (see `problems`), only for a broken run. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const { handoffs } = options;
  const every = Math.max(1, Math.floor(handoffs / (options.samples ?? 40)));
  const name = `soak-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  using listener = listen(name);
  await using consumer = new Child(Deno.execPath(), [
    "run",
    ...PEER_FLAGS,
    "--v8-flags=--expose-gc", // for the live-heap samples
    new URL("./consumer.ts", import.meta.url).pathname,
    name,
    String(every),
    ...(options.consumerMappingCacheSize === undefined
      ? []
      : [String(options.consumerMappingCacheSize)]),
  ]);
  await consumer.line("connected");
  using channel = await listener.accept({ timeout: 20000 });
  const maxSurfaces = options.maxSurfaces ?? 4;
  using pool = new SurfacePool({
    width: options.width ?? 320,
    height: options.height ?? 240,
    maxSurfaces,
  });
  const producer: Sample[] = [];
  const started = performance.now();
  for (let i = 0; i < handoffs; i++) {
    const surface = await pool.acquire({ timeout: 10000 });
    try {
      const bytes = surface.bytes();
      const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
      view.setUint32(0, i % 2 ** 32, true);
      view.setUint32(4, Math.floor(i / 2 ** 32), true);
      await channel.send(surface, undefined, { timeout: 10000 });
    } finally {
      surface.close();
    }
    if ((i + 1) % every === 0) {
      const live = liveHeapBytes();
      const { rss, heapTotal } = Deno.memoryUsage();
      producer.push({ handoffs: i + 1, fds: fdCount(), rss, heap: heapTotal, live });
      const seconds = (performance.now() - started) / 1000;
      options.progress?.(
        `${i + 1} handoffs, ${seconds.toFixed(1)} s, ${((i + 1) / seconds).toFixed(0)}/s, ` +
          `producer ${producer.at(-1)!.fds} fds ${mib(producer.at(-1)!.rss)}`,
      );
    }
  }
  channel.close();
  const consumerSamples: Sample[] = [];
  let corrupt = 0;
  for (;;) {
    const line = await consumer.line(/^(sample|done|corrupt) /, 60000);
    const [kind, a, b, c, d, e] = line.split(" ");
    if (kind === "sample") {
      consumerSamples.push({ handoffs: +a, fds: +b, rss: +c, heap: +d, live: +e });
    } else if (kind === "done") {
      if (+a !== handoffs) throw new Error(`the consumer got ${a} of ${handoffs} frames`);
      corrupt = +b;
      break;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const status = await consumer.exit();
  if (status.code !== 0) throw new Error(`the consumer failed:\n${consumer.stderr}`);
  const problems: string[] = [];
  if (corrupt > 0) problems.push(`${corrupt} frames were overwritten while the consumer held them`);
  const growthTolerance = options.growthToleranceBytesPerHandoff ??
    GROWTH_TOLERANCE_BYTES_PER_HANDOFF;
  const growth = {
    producer: judge("producer", producer, growthTolerance, FD_TOLERANCE + maxSurfaces, problems),
    consumer: judge("consumer", consumerSamples, growthTolerance, FD_TOLERANCE, problems),
  };
  return {
    handoffs,
    seconds,
    producer,
    consumer: consumerSamples,
    corrupt,
    problems,
    growthTolerance,
    growth,
  };
}

/** The report as text: a table of samples, then the verdict. */
export function formatSoakReport(report: SoakReport): string {
  const lines = [
    `soak: ${report.handoffs} handoffs in ${report.seconds.toFixed(1)} s ` +
    `(${(report.handoffs / report.seconds).toFixed(0)}/s, ` +
    `${(report.seconds * 1e6 / report.handoffs).toFixed(1)} µs each)`,
    "handoffs   producer: fds  RSS (V8 heap, live)          consumer: fds  RSS (V8 heap, live)",
  ];
  for (let i = 0; i < Math.max(report.producer.length, report.consumer.length); i++) {
    const p = report.producer[i], c = report.consumer[i];
    lines.push(
      `${String(p?.handoffs ?? c?.handoffs).padStart(9)}  ${String(p?.fds ?? "").padStart(14)}  ${
        (p ? `${mib(p.rss)} (${mib(p.heap)}, ${mib(p.live)})` : "").padStart(32)
      }  ${String(c?.fds ?? "").padStart(13)}  ${
        (c ? `${mib(c.rss)} (${mib(c.heap)}, ${mib(c.live)})` : "").padStart(32)
      }`,
    );
  }
  lines.push(`corrupt frames: ${report.corrupt}`);
  const perHandoff = (g: Growth | undefined) =>
    g
      ? `live heap ${g.live.toFixed(1)}, native ${g.native.toFixed(1)}, RSS ${g.rss.toFixed(1)}`
      : "-";
  lines.push(
    `growth after warm-up, bytes per handoff: producer ${perHandoff(report.growth.producer)}; ` +
      `consumer ${perHandoff(report.growth.consumer)}`,
  );
  lines.push(
    report.problems.length === 0
      ? `FLAT: descriptors within ${FD_TOLERANCE}, live heap and native memory growing by at most ${report.growthTolerance} B per handoff after warm-up`
      : `NOT FLAT (tolerance ${report.growthTolerance} B per handoff):\n  ${
        report.problems.join("\n  ")
      }`,
  );
  return lines.join("\n");
}
