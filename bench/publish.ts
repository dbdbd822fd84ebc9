/**
 * Publishing 1920x1080 BGRA frames to 1, 2 and 4 subscriber processes: what
 * each extra subscriber costs the producer, against sending the same frame
 * to one consumer over a plain channel (the floor: one export, one
 * `sendmsg`).
 *
 *   deno run --allow-ffi --allow-read --allow-write --allow-run --allow-env \
 *     bench/publish.ts [--json PATH] [--quick]
 *
 * `deno task bench` runs it after `bench/run.ts` and adds its keys to the
 * same JSON (`publish_*`).
 *
 * Method: one publisher per configuration (channel, 1, 2, 4 subscribers),
 * all receiver processes started up front (subscribers "latest", depth 1:
 * each receives and closes every frame it gets). With `taskset` and 2+
 * cores the producer runs on core 0 and every receiver on core 1, as in
 * `bench/run.ts`. The producer takes a surface from a pool of 8, sends it,
 * and paces one frame per millisecond — the same loop for every
 * configuration. Measured: the producer process's CPU time (user + system,
 * all its threads: `getrusage` through `node:process`) per frame over each
 * batch, which is what each subscriber adds (an export, a `sendmsg`, the
 * credit coming back) and is not inflated when the scheduler runs someone
 * else; and the wall time of each `send` until its promise settles.
 * Configurations run interleaved in rounds, so machine noise hits them
 * alike. Reported: CPU per frame (median batch), send p50 and mean, the
 * cost per extra subscriber ((4 subscribers − 1 subscriber) / 3, CPU), the
 * 1-subscriber / channel-floor ratio, and the fraction of frames each
 * receiver got (the slowest receiver).
 *
 * @module
 */

import {
  type Channel,
  connect,
  listen,
  publish,
  type Publisher,
  subscribe,
  type Surface,
  SurfacePool,
} from "../mod.ts";
import { cpuUsage } from "node:process";
import { Child, hasTaskset, percentile, SampledAllocation } from "./common.ts";

const WIDTH = 1920, HEIGHT = 1080;
// (--allow-sys: node:inspector, for the sampled allocation, SampledAllocation in common.ts)
const FLAGS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
];

/** Subscriber / consumer side: runs in a child process until its peer goes away. */
async function serve(mode: string, name: string): Promise<void> {
  if (mode === "--subscriber") {
    using subscription = await subscribe(name, { timeout: 10000 });
    console.log("ready");
    let received = 0;
    // What the code allocates per frame between the frames marked 1 and 2 (a Uint8Array meta),
    // sampled: V8's cumulative count also has what its idle-time collections move (see
    // SampledAllocation), which the rounds' idle seconds made most of it.
    using sampler = new SampledAllocation();
    let receivedAtMark = 0, perFrame = -1;
    for await (const frame of subscription) {
      frame.close();
      received++;
      const meta = frame.meta;
      if (meta instanceof Uint8Array) {
        if (meta[0] === 1) {
          await sampler.start();
          receivedAtMark = received;
        } else if (receivedAtMark > 0) {
          perFrame = (await sampler.stop()) / (received - receivedAtMark);
        }
      } else if ((meta as { report?: boolean } | undefined)?.report) {
        console.log(`got ${received} ${Math.round(perFrame)}`);
      }
    }
  } else {
    using channel = await connect(name, { timeout: 10000 });
    console.log("ready");
    let received = 0;
    for await (const frame of channel) {
      frame.close();
      received++;
      if ((frame.meta as { report?: boolean } | undefined)?.report) console.log(`got ${received}`);
    }
  }
}

/** One configuration: a publisher with `n` subscribers, or (`n` = 0) a channel to one consumer. */
interface Config {
  label: string;
  subscribers: number;
  send: (pool: SurfacePool, meta?: unknown) => Promise<void>;
  /** Sends `surface` itself (no pool, no timing). */
  sendSurface: (surface: Surface, meta?: Uint8Array) => Promise<void>;
  children: Child[];
  /** Wall time of each send, µs. */
  samples: number[];
  /** This process's CPU time per frame in each batch, µs (user + system, every thread). */
  cpuPerFrame: number[];
  sent: number;
  close(): void;
}

async function setUp(subscribers: number, cpu: number | undefined): Promise<Config> {
  const name = `bench-publish-${Deno.pid}-${subscribers}`;
  const self = new URL(import.meta.url).pathname;
  const children: Child[] = [];
  let publisher: Publisher | undefined;
  let channel: Channel | undefined;
  let listener: ReturnType<typeof listen> | undefined;
  const spawn = (mode: string) =>
    new Child(Deno.execPath(), ["run", ...FLAGS, self, mode, name], cpu);
  try {
    if (subscribers === 0) {
      listener = listen(name);
      const accepted = listener.accept({ timeout: 20000 });
      children.push(spawn("--consumer"));
      channel = await accepted;
    } else {
      publisher = publish(name, { keepLast: false });
      for (let i = 0; i < subscribers; i++) children.push(spawn("--subscriber"));
    }
    for (const child of children) {
      if ((await child.readLine(20000)) !== "ready") throw new Error("a peer did not start");
    }
    if (publisher) {
      const deadline = performance.now() + 20000;
      while (publisher.subscribers.filter((s) => s.state === "subscribed").length < subscribers) {
        if (performance.now() > deadline) throw new Error("subscribers did not subscribe");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  } catch (error) {
    for (const child of children) await child.stop(0);
    publisher?.close();
    channel?.close();
    listener?.close();
    throw error;
  }
  const config: Config = {
    label: subscribers === 0 ? "channel, 1 consumer" : `publish, ${subscribers} subscriber(s)`,
    subscribers,
    children,
    samples: [],
    cpuPerFrame: [],
    sent: 0,
    async send(pool, meta) {
      using surface = await pool.acquire({ timeout: 10000 });
      const start = performance.now();
      await (publisher ? publisher.send(surface, meta) : channel!.send(surface, meta));
      config.samples.push((performance.now() - start) * 1000);
      config.sent++;
    },
    sendSurface: (surface, meta) =>
      publisher ? publisher.send(surface, meta) : channel!.send(surface, meta),
    close() {
      publisher?.close();
      channel?.close();
      listener?.close();
    },
  };
  return config;
}

/** The benchmark's results, also merged into the JSON of `deno task bench`. */
export interface PublishBenchResults {
  publish_frame: string;
  publish_send_p50_us: Record<string, number>;
  publish_send_mean_us: Record<string, number>;
  publish_cpu_per_frame_us: Record<string, number>;
  publish_per_extra_subscriber_us: number;
  publish_per_extra_subscriber_wall_us: number;
  publish_one_subscriber_vs_channel: number;
  publish_received_fraction: Record<string, number>;
  /** = publish_per_extra_subscriber_us: producer CPU per extra subscriber per frame (issue 20's name). */
  fanout_per_subscriber_us: number;
  /** The same for the C floor (`bench/floor.c fanout`, blocking), in the same rounds. */
  fanout_floor_per_subscriber_us: number | null;
  /** The C floor's wall time per extra subscriber per frame, blocking and spinning for credits. */
  fanout_floor_per_subscriber_wall_us: number | null;
  fanout_floor_spin_per_subscriber_wall_us: number | null;
  /** fanout_per_subscriber_us / fanout_floor_per_subscriber_us within each round: median. */
  fanout_over_floor: number | null;
  /**
   * Bytes V8 allocated in the producer per frame sent to 4 subscribers, the
   * library alone: a batch sending one surface, less the same loop without
   * the send.
   */
  publish_allocated_bytes_per_frame: number;
  /**
   * Bytes V8 allocated per frame in a subscriber process (`for await` +
   * `close`, each frame parked for), over the measured batch of frames sent
   * back to back; the most of the 4.
   */
  subscribe_allocated_bytes_per_frame: number | null;
}

/** Builds bench/floor.c into a temporary directory: the path, or undefined without cc. */
async function buildFloor(): Promise<string | undefined> {
  try {
    const dir = await Deno.makeTempDir({ prefix: "surfaceport-fanout-floor-" });
    const out = `${dir}/floor`;
    const source = new URL("./floor.c", import.meta.url).pathname;
    const built = await new Deno.Command("cc", { args: ["-O2", "-o", out, source] }).output();
    return built.success ? out : undefined;
  } catch {
    return undefined;
  }
}

interface FanoutFloor {
  per_subscriber_us: number;
  per_subscriber_wall_us: number;
}

/** One run of the C fan-out floor: `rounds` batches of `frames` (pinned like the library). */
async function fanoutFloor(
  exe: string,
  mode: "fanout" | "fanout-spin",
  frames: number,
  rounds: number,
  receiverCpu: number | undefined,
): Promise<FanoutFloor> {
  const pin = receiverCpu === undefined ? [] : ["0", String(receiverCpu)];
  const child = new Child(exe, [
    mode,
    String(WIDTH),
    String(HEIGHT),
    String(frames),
    String(rounds),
    ...pin,
  ]);
  try {
    return JSON.parse(await child.readLine(120_000));
  } finally {
    await child.stop();
  }
}

/** Runs the benchmark; prints a table and returns the numbers. */
export async function runPublishBench(
  options: { quick?: boolean; receiverCpu?: number } = {},
): Promise<PublishBenchResults> {
  const receiverCpu = options.receiverCpu;
  const rounds = options.quick ? 2 : 5;
  const perRound = options.quick ? 150 : 400;
  const configs: Config[] = [];
  const floorExe = await buildFloor();
  const floorPerSubscriber: number[] = [], floorWall: number[] = [], ratios: number[] = [];

  using pool = new SurfacePool({ width: WIDTH, height: HEIGHT, format: "BGRA", maxSurfaces: 8 });
  try {
    for (const n of [0, 1, 2, 4]) configs.push(await setUp(n, receiverCpu));
    for (let round = 0; round < rounds; round++) {
      // The C floor first, then the library: the same pinning, minutes apart at most.
      const floor = floorExe
        ? await fanoutFloor(floorExe, "fanout", perRound, 1, receiverCpu)
        : undefined;
      const cpuThisRound: Record<string, number> = {};
      for (const config of configs) {
        const before = cpuUsage();
        for (let i = 0; i < perRound; i++) {
          await config.send(pool);
          await new Promise((resolve) => setTimeout(resolve, 1)); // ~1 frame per ms
        }
        const used = cpuUsage(before);
        config.cpuPerFrame.push((used.user + used.system) / perRound);
        cpuThisRound[key(config)] = (used.user + used.system) / perRound;
      }
      if (floor) {
        floorPerSubscriber.push(floor.per_subscriber_us);
        floorWall.push(floor.per_subscriber_wall_us);
        ratios.push((cpuThisRound["4"] - cpuThisRound["1"]) / 3 / floor.per_subscriber_us);
      }
    }
    // The producer's allocation, library alone: one surface (no pool, whose waits for surfaces
    // the subscribers still hold would count) sent to the 4 subscribers at the same pace, less
    // the same loop without the send.
    const four = configs.find((config) => config.subscribers === 4)!;
    let allocatedFour = 0, allocatedLoop = 0;
    {
      using sampler = new SampledAllocation();
      using surface = await pool.acquire({ timeout: 10000 });
      const settled = Promise.resolve();
      const marks = [new Uint8Array([1]), new Uint8Array([2])];
      for (let batch = 0; batch < 3; batch++) {
        const sending = batch % 2 === 0;
        if (batch > 0) await sampler.start();
        for (let i = 0; i < perRound; i++) {
          // The last batch's first and last frames mark the subscribers' measurement.
          const mark = batch === 2 && (i === 0 || i === perRound - 1) ? marks[i && 1] : undefined;
          await (sending ? four.sendSurface(surface, mark) : settled);
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        if (sending) four.sent += perRound; // (the receivers' counts include these)
        if (batch > 0) {
          if (sending) allocatedFour = await sampler.stop();
          else allocatedLoop = await sampler.stop();
        }
      }
    }
    const spinFloor = floorExe
      ? await fanoutFloor(floorExe, "fanout-spin", perRound, 1, receiverCpu)
      : undefined;
    // A last frame that asks every receiver how many frames it got.
    const received: Record<string, number> = {};
    let subscriberAllocated: number | null = null;
    for (const config of configs) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      await config.send(pool, { report: true });
      const counts: number[] = [];
      for (const child of config.children) {
        const [, count, allocated] = (await child.readLine(20000)).split(" ");
        counts.push(Number(count));
        if (config.subscribers === 4 && allocated !== undefined && Number(allocated) >= 0) {
          subscriberAllocated = Math.max(subscriberAllocated ?? 0, Number(allocated));
        }
      }
      received[key(config)] = Math.round(Math.min(...counts) / config.sent * 1000) / 1000;
    }
    const round = (v: number) => Math.round(v * 10) / 10;
    const p50: Record<string, number> = {}, mean: Record<string, number> = {};
    const cpu: Record<string, number> = {};
    for (const config of configs) {
      p50[key(config)] = round(percentile(config.samples, 50));
      mean[key(config)] = round(config.samples.reduce((a, b) => a + b, 0) / config.samples.length);
      cpu[key(config)] = round(percentile(config.cpuPerFrame, 50)); // median batch
    }
    const results: PublishBenchResults = {
      publish_frame: `${WIDTH}x${HEIGHT} BGRA`,
      publish_send_p50_us: p50,
      publish_send_mean_us: mean,
      publish_cpu_per_frame_us: cpu,
      publish_per_extra_subscriber_us: round((cpu["4"] - cpu["1"]) / 3),
      publish_per_extra_subscriber_wall_us: round((p50["4"] - p50["1"]) / 3),
      publish_one_subscriber_vs_channel: Math.round(cpu["1"] / cpu["channel"] * 100) / 100,
      publish_received_fraction: received,
      fanout_per_subscriber_us: round((cpu["4"] - cpu["1"]) / 3),
      fanout_floor_per_subscriber_us: floorPerSubscriber.length
        ? round(percentile(floorPerSubscriber, 50))
        : null,
      fanout_floor_per_subscriber_wall_us: floorWall.length
        ? round(percentile(floorWall, 50))
        : null,
      fanout_floor_spin_per_subscriber_wall_us: spinFloor
        ? round(spinFloor.per_subscriber_wall_us)
        : null,
      fanout_over_floor: ratios.length ? Math.round(percentile(ratios, 50) * 100) / 100 : null,
      publish_allocated_bytes_per_frame: Math.round((allocatedFour - allocatedLoop) / perRound),
      subscribe_allocated_bytes_per_frame: subscriberAllocated,
    };
    console.log(
      `\npublishing ${WIDTH}x${HEIGHT}, ${rounds} interleaved rounds of ${perRound} frames each` +
        (receiverCpu === undefined ? "" : ", producer on core 0, receivers on core 1") + ":",
    );
    console.log(
      "| sender                   | producer CPU µs/frame | send p50 µs | send mean µs | received |",
    );
    console.log(
      "|--------------------------|-----------------------|-------------|--------------|----------|",
    );
    for (const config of configs) {
      const k = key(config);
      console.log(
        `| ${config.label.padEnd(24)} | ${String(cpu[k]).padStart(21)} | ${
          String(p50[k]).padStart(11)
        } | ${String(mean[k]).padStart(12)} | ${String(received[k]).padStart(8)} |`,
      );
    }
    console.log(
      `each extra subscriber costs the producer ${results.publish_per_extra_subscriber_us} µs ` +
        `CPU per frame (wall p50: ${results.publish_per_extra_subscriber_wall_us} µs); ` +
        `1 subscriber / channel floor: ${results.publish_one_subscriber_vs_channel}x CPU`,
    );
    console.log(
      `C fan-out floor (bench/floor.c fanout, same rounds): ${results.fanout_floor_per_subscriber_us} µs ` +
        `CPU per extra subscriber (wall ${results.fanout_floor_per_subscriber_wall_us} µs; ` +
        `spinning for credits ${results.fanout_floor_spin_per_subscriber_wall_us} µs wall); ` +
        `library / floor ${results.fanout_over_floor}x (median of the rounds' ratios). ` +
        `Allocated per frame: producer (4 subscribers) ${results.publish_allocated_bytes_per_frame} B, ` +
        `a subscriber ${results.subscribe_allocated_bytes_per_frame} B`,
    );
    return results;
  } finally {
    for (const config of configs) {
      config.close();
      for (const child of config.children) await child.stop();
    }
  }
}

function key(config: Config): string {
  return config.subscribers === 0 ? "channel" : String(config.subscribers);
}

/**
 * Runs the benchmark in a child process, pinned to core 0 when `taskset`
 * exists (as `bench/run.ts` pins its producers), and returns its results.
 */
export async function runPublishBenchPinned(
  options: { quick?: boolean; pin?: boolean } = {},
): Promise<PublishBenchResults> {
  const pin = options.pin !== false && navigator.hardwareConcurrency >= 2 && await hasTaskset();
  const self = new URL(import.meta.url).pathname;
  const child = new Child(
    Deno.execPath(),
    [
      "run",
      ...FLAGS,
      "--allow-run",
      self,
      "--producer",
      ...(options.quick ? ["--quick"] : []),
      ...(pin ? ["--receivers-on", "1"] : []),
    ],
    pin ? 0 : undefined,
  );
  try {
    for (;;) {
      const line = await child.readLine(600_000);
      if (line.startsWith("{")) return JSON.parse(line);
      console.log(line);
    }
  } finally {
    await child.stop();
  }
}

if (import.meta.main) {
  const [mode, name] = Deno.args;
  if (mode === "--subscriber" || mode === "--consumer") {
    await serve(mode, name);
  } else if (mode === "--producer") {
    const at = Deno.args.indexOf("--receivers-on");
    const results = await runPublishBench({
      quick: Deno.args.includes("--quick"),
      receiverCpu: at >= 0 ? Number(Deno.args[at + 1]) : undefined,
    });
    console.log(JSON.stringify(results));
  } else {
    const args = [...Deno.args];
    const at = args.indexOf("--json");
    const jsonPath = at >= 0 ? args[at + 1] : undefined;
    const results = await runPublishBenchPinned({
      quick: args.includes("--quick"),
      pin: !args.includes("--no-pin"),
    });
    if (jsonPath) {
      let existing: Record<string, unknown> = {};
      try {
        existing = JSON.parse(await Deno.readTextFile(jsonPath));
      } catch {
        // a new file
      }
      await Deno.writeTextFile(
        jsonPath,
        JSON.stringify({ ...existing, ...results }, null, 2) + "\n",
      );
      console.log(`json: ${jsonPath}`);
    }
  }
}
