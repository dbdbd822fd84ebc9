/**
 * `surfaceport watch NAME`: subscribes and shows format and size, frames/s,
 * latency p50/p99 (timestamp to receipt), drops and the last frame's
 * metadata — refreshed in place on a terminal, one plain line per interval
 * otherwise. Ends cleanly on Ctrl-C and when the stream ends.
 *
 * @module
 */

import { type Frame, TimeoutError } from "../mod.ts";
import { type Command, integerOption, parseCommandArgs, UsageError } from "./command.ts";
import { isEndOfStream, openStream } from "./source.ts";
import { metaText, ms, type StreamReport, StreamStats } from "./stats.ts";

/** One plain line describing `report`. */
export function reportLine(name: string, report: StreamReport): string {
  const shape = report.format ? `${report.format} ${report.width}x${report.height}` : "no frames";
  return `${name}: ${shape}  ${report.fps.toFixed(1)} fps  latency p50 ${
    ms(report.latencyP50Micros)
  } p99 ${ms(report.latencyP99Micros)}  drops ${report.drops}  frames ${report.frames}  meta ${
    metaText(report.meta)
  }`;
}

/** The block shown on a terminal. */
function reportBlock(name: string, producer: string, report: StreamReport): string[] {
  return [
    `${name}  (producer ${producer})`,
    `  format    ${report.format ? `${report.format} ${report.width}x${report.height}` : "-"}`,
    `  rate      ${report.fps.toFixed(1)} frames/s   (${report.frames} frames)`,
    `  latency   p50 ${ms(report.latencyP50Micros)}   p99 ${ms(report.latencyP99Micros)}`,
    `  drops     ${report.drops}`,
    `  pool      ${report.pool.length} surfaces seen: ${
      report.pool.map((s) => s.id).slice(0, 12).join(" ")
    }`,
    `  meta      ${metaText(report.meta, 100)}`,
  ];
}

/** `watch NAME [--interval MS] [--frames N] [--timeout MS]`. */
export const watch: Command = {
  summary: "live frames/s, latency, drops and metadata of a stream",
  usage: [
    "usage: surfaceport watch NAME [--interval MS] [--frames N] [--timeout MS]",
    "",
    "Subscribes to NAME (newest frame first) and shows format and size, frames/s,",
    "latency p50/p99 from the producer's timestamp to receipt, drops and the last",
    "frame's metadata: refreshed in place on a terminal, one line per interval when",
    "stdout is a pipe or a file. Ends on Ctrl-C and when the stream ends. A name that",
    "`list` shows as a plain channel (a listen()er) is connected to as a channel consumer.",
    "  --interval MS  how often to report (default 1000)",
    "  --frames N     stop after N frames (default: run until the stream ends)",
    "  --timeout MS   how long to wait for NAME to appear (default 5000)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      interval: "string",
      frames: "string",
      timeout: "string",
    });
    if (positionals.length !== 1) throw new UsageError("watch needs exactly one NAME");
    const name = positionals[0];
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    const maxFrames = integerOption(values, "frames", Infinity as number);
    const timeout = integerOption(values, "timeout", 5000);
    const stream = await openStream(name, { timeout, signal: io.signal });
    const producer = stream.producer ? `pid ${stream.producer.pid}` : "?";
    const stats = new StreamStats();
    let shownLines = 0;
    const show = async (final: string | undefined) => {
      stats.extraDrops = stream.dropped;
      const report = stats.report(final ? Math.min(interval, 250) : interval);
      if (io.isTerminal) {
        const lines = reportBlock(name, producer, report);
        if (final) lines.push(final);
        const up = shownLines ? `\x1b[${shownLines}A` : "";
        await io.out(up + lines.map((line) => `\x1b[2K${line}\n`).join(""));
        shownLines = final ? 0 : lines.length;
      } else {
        await io.out(`${reportLine(name, report)}${final ? `  (${final})` : ""}\n`);
      }
    };
    if (!io.isTerminal) await io.out(`watching ${name} (producer ${producer})\n`);
    let nextReport = performance.now() + interval;
    let ending = "";
    try {
      while (stats.frames < maxFrames) {
        let frame: Frame;
        try {
          frame = await stream.receive({
            timeout: Math.max(1, nextReport - performance.now()),
            signal: io.signal,
          });
        } catch (error) {
          if (error instanceof TimeoutError) {
            nextReport = performance.now() + interval;
            await show(undefined);
            continue;
          }
          if (isEndOfStream(error)) {
            ending = "stream ended";
            break;
          }
          if (io.signal.aborted) {
            ending = "interrupted";
            break;
          }
          throw error;
        }
        stats.add(frame);
        frame.close();
        if (performance.now() >= nextReport) {
          nextReport = performance.now() + interval;
          await show(undefined);
        }
      }
    } finally {
      stream.close();
    }
    await show(ending || `stopped after ${maxFrames} frames`);
    return 0;
  },
};
