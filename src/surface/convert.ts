/**
 * Pixel conversions for people who look at frames: any surface format to
 * tightly packed 8-bit RGBA, for a canvas (`ImageData`), a WebGPU texture,
 * a PNG or an encoder that wants RGBA.
 *
 * YCbCr formats are converted with a named matrix (BT.601 or BT.709) and the
 * range the format declares: `420v` and `y420` are video range (luma 16–235,
 * chroma 16–240), `420f` is full range (0–255). Chroma is taken from the
 * 2x2 block a pixel belongs to (no interpolation). `L008` is full-range
 * luminance, so grey levels are copied as they are.
 *
 * @module
 */

import type { PixelFormat } from "../core/geometry.ts";
import { Surface } from "./surface.ts";

/** A YCbCr→RGB matrix: ITU-R BT.601 (SD video, JPEG) or ITU-R BT.709 (HD video). */
export type YCbCrMatrix = "bt601" | "bt709";

/** Every {@link YCbCrMatrix}, with its luma coefficients `Kr` and `Kb` (`Kg = 1 - Kr - Kb`). */
export const YCBCR_MATRICES: Readonly<
  Record<YCbCrMatrix, { readonly kr: number; readonly kb: number }>
> = {
  bt601: { kr: 0.299, kb: 0.114 },
  bt709: { kr: 0.2126, kb: 0.0722 },
};

/** The range of a YCbCr format's samples. */
export type YCbCrRange = "video" | "full";

/** Options of {@link toRGBA}. */
export interface ToRGBAOptions {
  /**
   * The YCbCr→RGB matrix for `420v`, `420f` and `y420` (ignored for the
   * other formats). Default: {@link defaultMatrix} of the surface's height —
   * BT.709 above 576 rows, BT.601 otherwise, as video players guess when a
   * stream does not say.
   */
  matrix?: YCbCrMatrix;
  /**
   * Write into this buffer instead of allocating one (for a loop that
   * converts every frame): at least `width * height * 4` bytes of the
   * output size. The result is a view of its first `width * height * 4` bytes.
   */
  into?: Uint8Array<ArrayBuffer>;
  /**
   * Output width in pixels (default: the surface's). With `height`, scales
   * by taking the nearest source pixel — for previews and thumbnails.
   */
  width?: number;
  /** Output height in pixels (default: the surface's). */
  height?: number;
}

/**
 * The matrix used when none is given: BT.709 for surfaces taller than 576
 * rows (HD), BT.601 otherwise (SD).
 */
export function defaultMatrix(height: number): YCbCrMatrix {
  return height > 576 ? "bt709" : "bt601";
}

/** The sample range a format declares, or `undefined` for RGB and grey formats. */
export function rangeOf(format: PixelFormat): YCbCrRange | undefined {
  switch (format) {
    case "420v":
    case "y420":
      return "video";
    case "420f":
      return "full";
    default:
      return undefined;
  }
}

/** Fixed-point (16.16) lookup tables for one matrix and range. */
interface YCbCrTables {
  y: Int32Array;
  rFromCr: Int32Array;
  gFromCb: Int32Array;
  gFromCr: Int32Array;
  bFromCb: Int32Array;
}

const TABLES = new Map<string, YCbCrTables>();

/**
 * R = Y' + 2(1-Kr)·Pr, B = Y' + 2(1-Kb)·Pb, G = (Y' - Kr·R - Kb·B) / Kg,
 * with Y' and Pb/Pr normalised from the range's code values.
 */
function tablesFor(matrix: YCbCrMatrix, range: YCbCrRange): YCbCrTables {
  const key = `${matrix}/${range}`;
  let tables = TABLES.get(key);
  if (tables) return tables;
  const { kr, kb } = YCBCR_MATRICES[matrix];
  const kg = 1 - kr - kb;
  const [yOffset, yScale, cScale] = range === "video" ? [16, 219, 224] : [0, 255, 255];
  const one = 65536 * 255;
  tables = {
    y: new Int32Array(256),
    rFromCr: new Int32Array(256),
    gFromCb: new Int32Array(256),
    gFromCr: new Int32Array(256),
    bFromCb: new Int32Array(256),
  };
  for (let v = 0; v < 256; v++) {
    const c = (v - 128) / cScale;
    tables.y[v] = Math.round(((v - yOffset) / yScale) * one);
    tables.rFromCr[v] = Math.round(2 * (1 - kr) * c * one);
    tables.bFromCb[v] = Math.round(2 * (1 - kb) * c * one);
    tables.gFromCb[v] = Math.round((-kb * 2 * (1 - kb) / kg) * c * one);
    tables.gFromCr[v] = Math.round((-kr * 2 * (1 - kr) / kg) * c * one);
  }
  TABLES.set(key, tables);
  return tables;
}

function clampByte(fixed: number): number {
  const v = (fixed + 32768) >> 16;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

let lastIndices: { width: number; source: number; indices: Int32Array } | undefined;

/** Nearest source column for each of `width` output columns over `source` columns (cached). */
function sourceIndices(width: number, source: number): Int32Array {
  if (lastIndices?.width === width && lastIndices.source === source) return lastIndices.indices;
  const indices = new Int32Array(width);
  for (let x = 0; x < width; x++) indices[x] = Math.floor(((2 * x + 1) * source) / (2 * width));
  lastIndices = { width, source, indices };
  return indices;
}

function checkSize(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > 32768) {
    throw new RangeError(`toRGBA: ${name} must be an integer from 1 to 32768, got ${value}`);
  }
  return value;
}

/**
 * Converts a surface (or a received frame's surface) to tightly packed
 * 8-bit RGBA, `width * height * 4` bytes, row after row with no padding.
 * BGRA and RGBA keep their alpha; every other format is opaque. Reads the
 * surface's memory once; the surface stays open. Throws `ClosedError` for a
 * closed surface, `RangeError` for a bad size or a too-small `into`.
 *
 * @example
 * ```ts
 * import { Surface, toRGBA } from "@surfaceport/surfaceport";
 * using surface = Surface.create({ width: 64, height: 48, format: "420v" });
 * const rgba = toRGBA(surface, { matrix: "bt709" });
 * const image = new ImageData(new Uint8ClampedArray(rgba.buffer), 64, 48);
 * ```
 */
export function toRGBA(
  source: Surface | { readonly surface: Surface },
  options: ToRGBAOptions = {},
): Uint8Array<ArrayBuffer> {
  const surface = source instanceof Surface ? source : source?.surface;
  if (!(surface instanceof Surface)) {
    throw new TypeError("toRGBA: expected a Surface or a Frame");
  }
  const sw = surface.width, sh = surface.height;
  const width = checkSize("width", options.width, sw);
  const height = checkSize("height", options.height, sh);
  const length = width * height * 4;
  let out: Uint8Array<ArrayBuffer>;
  if (options.into !== undefined) {
    if (!(options.into instanceof Uint8Array) || options.into.length < length) {
      throw new RangeError(
        `toRGBA: into must be a Uint8Array of at least ${length} bytes (${width}x${height}x4)`,
      );
    }
    out = options.into.length === length ? options.into : options.into.subarray(0, length);
  } else {
    out = new Uint8Array(length);
  }
  const format = surface.format;
  const planes = surface.planes;
  const scaled = width !== sw || height !== sh;
  // Source column of each output column (nearest, sampling pixel centres); identity unscaled.
  const xs = sourceIndices(width, sw);
  const sourceY = (y: number) => scaled ? Math.floor(((2 * y + 1) * sh) / (2 * height)) : y;

  if (format === "BGRA" || format === "RGBA" || format === "L008") {
    const src = surface.bytes(0);
    const stride = planes[0].bytesPerRow;
    const [r, b] = format === "BGRA" ? [2, 0] : [0, 2];
    for (let y = 0, d = 0; y < height; y++) {
      const row = sourceY(y) * stride;
      if (format === "L008") {
        for (let x = 0; x < width; x++, d += 4) {
          const v = src[row + xs[x]];
          out[d] = v;
          out[d + 1] = v;
          out[d + 2] = v;
          out[d + 3] = 255;
        }
      } else {
        for (let x = 0; x < width; x++, d += 4) {
          const s = row + xs[x] * 4;
          out[d] = src[s + r];
          out[d + 1] = src[s + 1];
          out[d + 2] = src[s + b];
          out[d + 3] = src[s + 3];
        }
      }
    }
    return out;
  }

  const matrix = options.matrix ?? defaultMatrix(sh);
  if (!Object.hasOwn(YCBCR_MATRICES, matrix)) {
    throw new RangeError(`toRGBA: unknown matrix ${JSON.stringify(matrix)}; use bt601 or bt709`);
  }
  const { y: ty, rFromCr, gFromCb, gFromCr, bFromCb } = tablesFor(matrix, rangeOf(format)!);
  const luma = surface.bytes(0);
  const lumaStride = planes[0].bytesPerRow;
  // Chroma as (plane, first byte, step per chroma sample) for Cb and Cr: NV12 interleaves them.
  const interleaved = format !== "y420";
  const cb = surface.bytes(1);
  const cr = interleaved ? cb : surface.bytes(2);
  const cbStride = planes[1].bytesPerRow;
  const crStride = interleaved ? cbStride : planes[2].bytesPerRow;
  const step = interleaved ? 2 : 1;
  const crOffset = interleaved ? 1 : 0;
  for (let y = 0, d = 0; y < height; y++) {
    const sy = sourceY(y);
    const lumaRow = sy * lumaStride;
    const cbRow = (sy >> 1) * cbStride;
    const crRow = (sy >> 1) * crStride + crOffset;
    if (!scaled) {
      // Two pixels share one chroma sample (4:2:0 widths are even).
      for (let x = 0; x < width; x += 2, d += 8) {
        const c = (x >> 1) * step;
        const u = cb[cbRow + c], v = cr[crRow + c];
        const rc = rFromCr[v], gc = gFromCb[u] + gFromCr[v], bc = bFromCb[u];
        const y0 = ty[luma[lumaRow + x]], y1 = ty[luma[lumaRow + x + 1]];
        out[d] = clampByte(y0 + rc);
        out[d + 1] = clampByte(y0 + gc);
        out[d + 2] = clampByte(y0 + bc);
        out[d + 3] = 255;
        out[d + 4] = clampByte(y1 + rc);
        out[d + 5] = clampByte(y1 + gc);
        out[d + 6] = clampByte(y1 + bc);
        out[d + 7] = 255;
      }
    } else {
      for (let x = 0; x < width; x++, d += 4) {
        const sx = xs[x];
        const c = (sx >> 1) * step;
        const u = cb[cbRow + c], v = cr[crRow + c];
        const yy = ty[luma[lumaRow + sx]];
        out[d] = clampByte(yy + rFromCr[v]);
        out[d + 1] = clampByte(yy + gFromCb[u] + gFromCr[v]);
        out[d + 2] = clampByte(yy + bFromCb[u]);
        out[d + 3] = 255;
      }
    }
  }
  return out;
}
