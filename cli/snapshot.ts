/**
 * `surfaceport snapshot NAME [out.png]`: one frame of a stream to a PNG, in
 * any pixel format, with the YCbCr→RGB matrix named and selectable.
 *
 * @module
 */

import { encode } from "fast-png";
import {
  defaultMatrix,
  type Frame,
  rangeOf,
  type Surface,
  toRGBA,
  YCBCR_MATRICES,
  type YCbCrMatrix,
} from "../mod.ts";
import { type Command, integerOption, parseCommandArgs, UsageError } from "./command.ts";
import { openStream } from "./source.ts";

/**
 * Encodes `surface` as an 8-bit RGBA PNG (fast-png), converting YCbCr with
 * `matrix` (default: {@link defaultMatrix} of its height).
 */
export function surfaceToPNG(surface: Surface, matrix?: YCbCrMatrix): Uint8Array {
  const data = toRGBA(surface, { matrix });
  return encode({ width: surface.width, height: surface.height, data, channels: 4, depth: 8 });
}

/** How a frame was converted, for the message `snapshot` prints. */
export function conversionNote(frame: Frame, matrix: YCbCrMatrix | undefined): string {
  const { format, height } = frame.surface;
  const range = rangeOf(format);
  if (!range) return format === "L008" ? "grey levels as they are" : "no conversion";
  const used = matrix ?? defaultMatrix(height);
  return `matrix ${used}${matrix ? "" : ` (default for ${height} rows)`}, ${range} range`;
}

/** `snapshot NAME [out.png] [--matrix bt601|bt709] [--timeout MS]`. */
export const snapshot: Command = {
  summary: "one frame of a stream to a PNG (every pixel format)",
  usage: [
    "usage: surfaceport snapshot NAME [OUT.png] [--matrix bt601|bt709] [--timeout MS]",
    "",
    "Receives one frame of NAME and writes it as a PNG (default NAME.png).",
    "BGRA, RGBA, L008 (grey), 420v/NV12 (video range), 420f (full range) and",
    "y420/I420 (video range) are converted to RGBA; YCbCr with --matrix:",
    "  --matrix bt601|bt709  YCbCr→RGB matrix (default BT.709 above 576 rows, BT.601 below)",
    "  --timeout MS          how long to wait for NAME and its frame (default 5000)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      matrix: "string",
      timeout: "string",
    });
    if (positionals.length < 1 || positionals.length > 2) {
      throw new UsageError("snapshot needs NAME and optionally OUT.png");
    }
    const [name, requestedOut] = positionals;
    const matrix = values.matrix as YCbCrMatrix | undefined;
    if (matrix !== undefined && !Object.hasOwn(YCBCR_MATRICES, matrix)) {
      throw new UsageError(`--matrix must be bt601 or bt709, got ${JSON.stringify(matrix)}`);
    }
    const timeout = integerOption(values, "timeout", 5000);
    const out = requestedOut ?? `${name.replace(/[^A-Za-z0-9._-]+/g, "_")}.png`;
    const stream = await openStream(name, { timeout, signal: io.signal });
    try {
      using frame = await stream.receive({ timeout, signal: io.signal });
      const png = surfaceToPNG(frame.surface, matrix);
      await Deno.writeFile(out, png);
      const { format, width, height } = frame.surface;
      await io.out(
        `wrote ${out}: ${format} ${width}x${height}, frame ${frame.sequence}, ${
          conversionNote(frame, matrix)
        }\n`,
      );
    } finally {
      stream.close();
    }
    return 0;
  },
};
