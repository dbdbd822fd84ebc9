/**
 * The `gst-launch-1.0` pipelines of the PipeWire bridges (`pipewire.ts`,
 * which runs and restarts them): plain data, checked here. A source
 * pipeline is `pipewiresrc ! … ! unixfdsink`, with what its
 * {@link PipeWireCopyMode} puts between them; a sink pipeline is
 * `unixfdsrc ! pipewiresink mode=provide`.
 *
 * @module
 */

import type { PixelFormat } from "../core/geometry.ts";
import { gstFormatOf } from "./caps.ts";
import { unixFdProperties } from "./launcher.ts";

/** `pipewiresrc` in PipeWire 1.4 sets no `media.type`, and WirePlumber links no stream without one. */
const CAPTURE_PROPERTIES = "p,media.type=Video,media.category=Capture,media.role=Camera";
/** A format one exact swap away (see `network_pipelines.ts`). */
const DETOUR: Record<string, string> = { BGRA: "RGBA", RGBA: "BGRA", I420: "YV12" };

/**
 * For an RGB source of the format wanted: caps that differ from the source's
 * only in a colorimetry field `videoconvert` does not act on by default
 * (transfer and primaries: its gamma and primaries modes are "none"), so it
 * copies each frame once, unchanged, instead of passing the mapped memory
 * through to `unixfdsink`, which refuses it.
 */
function recolourCaps(gstFormat: string, sourceColorimetry: string | undefined): string {
  const colorimetry = sourceColorimetry === "1:1:0:0" ? "1:1:1:0" : "1:1:0:0";
  return `video/x-raw,format=${gstFormat},colorimetry=${colorimetry}`;
}

/** Throws a `RangeError` unless `target` can be a PipeWire node name or serial (no pipeline syntax). */
export function checkTarget(target: string): void {
  if (!/^[A-Za-z0-9._:-]{1,200}$/.test(target)) {
    throw new RangeError(`bad PipeWire node name or serial: ${JSON.stringify(target)}`);
  }
}

/**
 * How a {@link PipeWireSource} pipeline hands frames on: `"direct"` (the
 * PipeWire buffer itself), `"convert"` (one copy into another format),
 * `"recolour"` (one unchanged copy of an RGB frame already in the format
 * wanted) or `"swap"` (two copies: an exact channel or plane swap and back,
 * for other formats that already are the one wanted).
 */
export type PipeWireCopyMode = "direct" | "convert" | "recolour" | "swap";

/** The `gst-launch-1.0` words of a PipeWire source pipeline. */
export function pipeWireSourcePipeline(
  target: string,
  address: string,
  copy: PipeWireCopyMode,
  format: PixelFormat = "BGRA",
  sourceColorimetry?: string,
): string[] {
  checkTarget(target);
  const gstFormat = gstFormatOf(format);
  const convert = copy === "direct" ? [] : copy === "recolour"
    ? [
      // pipewiresrc's caps leave colorimetry open, so the source would take the one wanted and
      // videoconvert would pass through: pin the source to what it had (sRGB by default).
      `video/x-raw,colorimetry=${sourceColorimetry ?? "sRGB"}`,
      "!",
      "videoconvert",
      "!",
      recolourCaps(gstFormat, sourceColorimetry),
      "!",
    ]
    : [
      ...(copy === "swap"
        ? ["videoconvert", "!", `video/x-raw,format=${DETOUR[gstFormat] ?? "YV12"}`, "!"]
        : []),
      "videoconvert",
      "!",
      `video/x-raw,format=${gstFormat}`,
      "!",
    ];
  return [
    "pipewiresrc",
    `target-object=${target}`,
    "client-name=surfaceport",
    `stream-properties=${CAPTURE_PROPERTIES}`,
    "!",
    ...convert,
    "unixfdsink",
    ...unixFdProperties(address),
    "sync=false",
    "wait-for-connection=true",
  ];
}

/** The `gst-launch-1.0` words of a PipeWire sink pipeline providing node `nodeName`. */
export function pipeWireSinkPipeline(address: string, nodeName: string): string[] {
  checkTarget(nodeName);
  return [
    "unixfdsrc",
    ...unixFdProperties(address),
    "!",
    "pipewiresink",
    "mode=provide",
    "client-name=surfaceport",
    `stream-properties=p,node.name=${nodeName},media.class=Video/Source,media.role=Camera`,
    "sync=false",
  ];
}
