/**
 * GStreamer raw-video caps ↔ surfaceport formats, and GStreamer's default
 * plane layout (what `gst_video_info_set_format` computes: rows rounded up
 * to 4 bytes per plane, planes back to back), which is what a buffer without
 * a `GstVideoMeta` has. Platform-neutral.
 *
 * | GStreamer | surfaceport |
 * |---|---|
 * | `BGRA`, `RGBA` | `BGRA`, `RGBA` |
 * | `GRAY8` | `L008` |
 * | `NV12` | `420v` (limited range), `420f` (full range colorimetry) |
 * | `I420` | `y420` |
 *
 * @module
 */

import {
  alignUp,
  type PixelFormat,
  type PlaneGeometry,
  type SurfaceGeometry,
  validateGeometry,
} from "../core/geometry.ts";
import { GST_VIDEO_FORMAT, GstProtocolError, type GstVideoMetaRecord } from "./protocol.ts";

/** What the bridge needs out of a caps string. */
export interface GstVideoCaps {
  /** The GStreamer format name, e.g. `"NV12"`. */
  readonly gstFormat: string;
  /** The surfaceport format it maps to. */
  readonly format: PixelFormat;
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** The colorimetry (e.g. `"bt709"`, `"1:4:0:0"`); GStreamer's default for the size if absent. */
  readonly colorimetry: string | undefined;
  /** The framerate as `[numerator, denominator]`, if present. */
  readonly framerate: readonly [number, number] | undefined;
}

/** Splits `text` on `separator` outside quotes and brackets. */
function splitTopLevel(text: string, separator: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "{" || c === "[" || c === "<" || c === "(") depth++;
    else if (c === "}" || c === "]" || c === ">" || c === ")") depth--;
    else if (c === separator && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/** The fields of the first structure of a caps string: name and `field → raw value` (type prefix dropped). */
export function parseCapsFields(caps: string): { name: string; fields: Map<string, string> } {
  const structure = splitTopLevel(caps, ";")[0];
  const [head, ...rest] = splitTopLevel(structure, ",");
  const fields = new Map<string, string>();
  for (const part of rest) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    const typed = /^\(([a-zA-Z0-9_]+)\)\s*(.*)$/s.exec(value);
    if (typed) value = typed[2].trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      value = value.slice(1, -1).replace(/\\(.)/g, "$1");
    }
    fields.set(key, value);
  }
  return { name: head.trim(), fields };
}

/** True for a colorimetry string that says full range (`0-255`): `"1:…"` or `sRGB`/`jpeg`-style names. */
export function isFullRange(colorimetry: string | undefined): boolean {
  if (!colorimetry) return false;
  if (/^\d+:/.test(colorimetry)) return colorimetry.startsWith("1:");
  return colorimetry === "sRGB" || colorimetry === "jpeg";
}

/**
 * Parses raw-video caps into what the bridge needs. Throws
 * {@link GstProtocolError} `BAD_CAPS` for anything else (encoded video,
 * DMABuf caps, a format without a surfaceport counterpart, odd 4:2:0 sizes).
 */
export function parseVideoCaps(caps: string): GstVideoCaps {
  const { name, fields } = parseCapsFields(caps);
  if (name !== "video/x-raw") {
    throw new GstProtocolError(
      "BAD_CAPS",
      `the bridge carries raw system-memory video (video/x-raw), got ${JSON.stringify(name)}`,
    );
  }
  const gstFormat = fields.get("format") ?? "";
  const width = Number(fields.get("width"));
  const height = Number(fields.get("height"));
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new GstProtocolError("BAD_CAPS", `caps without a fixed width and height: ${caps}`);
  }
  const gstFormatName = fields.get("format") ?? "";
  // Absent colorimetry means GStreamer's default: BT.709 from 720 lines up, BT.601 below, sRGB for RGB.
  const colorimetry = fields.get("colorimetry") ??
    (gstFormatName === "BGRA" || gstFormatName === "RGBA"
      ? "sRGB"
      : gstFormatName === "GRAY8"
      ? undefined
      : height >= 720
      ? "bt709"
      : "bt601");
  let format: PixelFormat;
  switch (gstFormat) {
    case "BGRA":
    case "RGBA":
      format = gstFormat;
      break;
    case "GRAY8":
      format = "L008";
      break;
    case "NV12":
      format = isFullRange(colorimetry) ? "420f" : "420v";
      break;
    case "I420":
      format = "y420";
      break;
    default:
      throw new GstProtocolError(
        "BAD_CAPS",
        `format ${JSON.stringify(gstFormat)} has no surfaceport counterpart ` +
          "(use BGRA, RGBA, GRAY8, NV12 or I420; add videoconvert before unixfdsink)",
      );
  }
  if ((format === "420v" || format === "420f" || format === "y420") && (width % 2 || height % 2)) {
    throw new GstProtocolError(
      "BAD_CAPS",
      `${gstFormat} ${width}x${height}: surfaceport's 4:2:0 formats need even sizes`,
    );
  }
  const fr = /^(\d+)\/(\d+)$/.exec(fields.get("framerate") ?? "");
  return {
    gstFormat,
    format,
    width,
    height,
    colorimetry,
    framerate: fr ? [Number(fr[1]), Number(fr[2])] : undefined,
  };
}

/** The GStreamer format name of a surfaceport format. */
export function gstFormatOf(format: PixelFormat): string {
  switch (format) {
    case "BGRA":
    case "RGBA":
      return format;
    case "L008":
      return "GRAY8";
    case "420v":
    case "420f":
      return "NV12";
    case "y420":
      return "I420";
  }
}

/** The `GstVideoFormat` number of a GStreamer format name the bridge maps. */
export function gstVideoFormatNumber(gstFormat: string): number | undefined {
  return (GST_VIDEO_FORMAT as Record<string, number>)[gstFormat];
}

/**
 * Caps for a surfaceport format at `width`×`height`: what the to-gst bridge
 * announces. NV12 carries its range in the colorimetry (`bt709` limited,
 * `1:3:5:1` full range BT.709); RGB formats say `sRGB`.
 */
export function capsOf(format: PixelFormat, width: number, height: number, fps?: number): string {
  const colorimetry = format === "420v" || format === "y420"
    ? "bt709"
    : format === "420f"
    ? "1:3:5:1"
    : format === "L008"
    ? undefined
    : "sRGB";
  const parts = [
    "video/x-raw",
    `format=(string)${gstFormatOf(format)}`,
    `width=(int)${width}`,
    `height=(int)${height}`,
    `framerate=(fraction)${fps && fps > 0 ? `${Math.round(fps)}/1` : "0/1"}`,
    "pixel-aspect-ratio=(fraction)1/1",
    "interlace-mode=(string)progressive",
  ];
  if (colorimetry) parts.push(`colorimetry=(string)${colorimetry}`);
  return parts.join(", ");
}

/**
 * GStreamer's default layout of a `width`×`height` frame of `format` (what
 * a buffer without GstVideoMeta has): planes with their offsets from the
 * buffer's first byte, and the total size. Rows are rounded up to 4 bytes.
 */
export function defaultGstLayout(
  format: PixelFormat,
  width: number,
  height: number,
): { planes: PlaneGeometry[]; size: number } {
  const h2 = alignUp(height, 2);
  switch (format) {
    case "BGRA":
    case "RGBA": {
      const stride = width * 4;
      return {
        planes: [{ width, height, bytesPerElement: 4, bytesPerRow: stride, offset: 0 }],
        size: stride * height,
      };
    }
    case "L008": {
      const stride = alignUp(width, 4);
      return {
        planes: [{ width, height, bytesPerElement: 1, bytesPerRow: stride, offset: 0 }],
        size: stride * height,
      };
    }
    case "420v":
    case "420f": {
      const stride = alignUp(width, 4);
      const uv = stride * h2;
      return {
        planes: [
          { width, height, bytesPerElement: 1, bytesPerRow: stride, offset: 0 },
          {
            width: width / 2,
            height: height / 2,
            bytesPerElement: 2,
            bytesPerRow: stride,
            offset: uv,
          },
        ],
        size: uv + stride * (h2 / 2),
      };
    }
    case "y420": {
      const stride0 = alignUp(width, 4);
      const stride1 = alignUp(alignUp(width, 2) / 2, 4);
      const u = stride0 * h2;
      const v = u + stride1 * (h2 / 2);
      return {
        planes: [
          { width, height, bytesPerElement: 1, bytesPerRow: stride0, offset: 0 },
          {
            width: width / 2,
            height: height / 2,
            bytesPerElement: 1,
            bytesPerRow: stride1,
            offset: u,
          },
          {
            width: width / 2,
            height: height / 2,
            bytesPerElement: 1,
            bytesPerRow: stride1,
            offset: v,
          },
        ],
        size: v + stride1 * (h2 / 2),
      };
    }
  }
}

/**
 * The planes of a buffer under `caps`: GStreamer's default layout, with the
 * strides and offsets of its GstVideoMeta if it has one (unchecked against
 * any memory). Throws {@link GstProtocolError} when the meta contradicts the
 * caps.
 */
function planesOfGstBuffer(
  caps: GstVideoCaps,
  videoMeta: GstVideoMetaRecord | undefined,
): PlaneGeometry[] {
  const planes = defaultGstLayout(caps.format, caps.width, caps.height).planes;
  if (!videoMeta) return planes;
  if (
    videoMeta.width !== caps.width || videoMeta.height !== caps.height ||
    videoMeta.format !== gstVideoFormatNumber(caps.gstFormat) ||
    videoMeta.offsets.length !== planes.length || videoMeta.strides.length !== planes.length
  ) {
    throw new GstProtocolError(
      "BAD_META",
      `GstVideoMeta (format ${videoMeta.format}, ${videoMeta.width}x${videoMeta.height}, ` +
        `${videoMeta.offsets.length} planes) contradicts the caps ` +
        `(${caps.gstFormat} ${caps.width}x${caps.height})`,
    );
  }
  return planes.map((p, i) => ({
    ...p,
    bytesPerRow: videoMeta.strides[i],
    offset: videoMeta.offsets[i],
  }));
}

/** The most bytes the copy path reads at once, whatever strides a sink claims. */
export const COPY_READ_MAX = 16 << 20;

/** How the copy path reads one plane: rows of `row` bytes, `stride` apart, from one memory. */
export interface PlaneCopy {
  /** Index of the memory (and descriptor) the plane lies in. */
  readonly memory: number;
  /** Offset of the plane's first row in that memory's file. */
  readonly fileOffset: number;
  /** Bytes from one row's start to the next's. */
  readonly stride: number;
  /** Bytes of pixels in a row. */
  readonly row: number;
  /** Rows. */
  readonly height: number;
  /** Bytes from the first row's start to the last row's end: what the file must hold. */
  readonly span: number;
  /** Rows read per `pread`: as many as fit {@link COPY_READ_MAX} (at least one). */
  readonly rowsPerRead: number;
}

/**
 * Plans the copy of a buffer of `memories` (offsets into each descriptor's
 * file, sizes as the sink declared them) under `caps`: each plane must lie
 * inside one memory. Checked before anything is allocated or read, with
 * reads bounded by {@link COPY_READ_MAX}, so a lying stride (2^31 − 1, or
 * 2^24 over a sparse file) costs a {@link GstProtocolError}, never a huge
 * allocation. The files' real sizes are for the caller to check.
 */
export function planCopy(
  caps: GstVideoCaps,
  videoMeta: GstVideoMetaRecord | undefined,
  memories: readonly { size: number; offset: number }[],
): PlaneCopy[] {
  return planesOfGstBuffer(caps, videoMeta).map((plane, p) => {
    const row = plane.width * plane.bytesPerElement;
    const stride = plane.bytesPerRow;
    const start = plane.offset;
    if (!Number.isSafeInteger(stride) || stride < row) {
      throw new GstProtocolError("BAD_META", `plane ${p}: stride ${stride} is shorter than a row`);
    }
    const span = stride * (plane.height - 1) + row;
    let base = 0;
    for (let i = 0; i < memories.length; i++) {
      const memory = memories[i];
      if (
        Number.isSafeInteger(start) && start >= base && Number.isSafeInteger(start + span) &&
        start + span <= base + memory.size
      ) {
        const fileOffset = memory.offset + start - base;
        if (!Number.isSafeInteger(fileOffset + span)) break;
        const rowsPerRead = Math.max(
          1,
          Math.min(plane.height, Math.floor((COPY_READ_MAX - row) / stride) + 1),
        );
        return { memory: i, fileOffset, stride, row, height: plane.height, span, rowsPerRead };
      }
      base += memory.size;
    }
    throw new GstProtocolError(
      "BAD_META",
      `plane ${p} (bytes ${start}-${start + span}, stride ${stride}) is not inside one of ` +
        `the buffer's ${memories.length} memories`,
    );
  });
}

/**
 * The surfaceport geometry of a GStreamer buffer whose single memory starts
 * at `memoryOffset` in a file of `fileSize` bytes: the planes from the
 * buffer's GstVideoMeta when it has one, else GStreamer's default layout.
 * Throws {@link GstProtocolError} when the meta contradicts the caps or a
 * plane leaves the memory (`memorySize` bytes).
 */
export function geometryOfGstBuffer(
  caps: GstVideoCaps,
  videoMeta: GstVideoMetaRecord | undefined,
  memoryOffset: number,
  memorySize: number,
  fileSize: number,
): SurfaceGeometry {
  const planes = planesOfGstBuffer(caps, videoMeta);
  const absolute = planes.map((p) => ({ ...p, offset: p.offset + memoryOffset }));
  for (let i = 0; i < absolute.length; i++) {
    const p = planes[i];
    if (!(p.bytesPerRow >= p.width * p.bytesPerElement)) {
      throw new GstProtocolError(
        "BAD_META",
        `plane ${i}: stride ${p.bytesPerRow} is shorter than a row`,
      );
    }
    if (p.offset < 0 || p.offset + p.bytesPerRow * p.height > memorySize) {
      throw new GstProtocolError(
        "BAD_META",
        `plane ${i} (offset ${p.offset}, ${p.bytesPerRow}x${p.height}) overruns the ${memorySize}-byte memory`,
      );
    }
  }
  if (
    !Number.isSafeInteger(fileSize) || fileSize <= 0 ||
    !Number.isSafeInteger(memoryOffset + memorySize) ||
    memoryOffset + memorySize > fileSize
  ) {
    throw new GstProtocolError(
      "BAD_META",
      `memory (offset ${memoryOffset}, ${memorySize} bytes) overruns its ${fileSize}-byte file`,
    );
  }
  const geometry = {
    width: caps.width,
    height: caps.height,
    format: caps.format,
    planes: absolute,
    allocSize: fileSize,
  };
  const problem = validateGeometry(geometry);
  if (problem) throw new GstProtocolError("BAD_META", problem);
  return geometry;
}

/** True if `geometry`'s planes sit exactly where GStreamer's default layout puts them, from offset 0. */
export function matchesDefaultLayout(geometry: SurfaceGeometry): boolean {
  const layout = defaultGstLayout(geometry.format, geometry.width, geometry.height);
  return geometry.planes.every((p, i) =>
    p.bytesPerRow === layout.planes[i].bytesPerRow && p.offset === layout.planes[i].offset
  ) && geometry.allocSize >= layout.size;
}
