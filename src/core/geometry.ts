/**
 * Pixel formats and plane geometry, written once for every platform. The same
 * rules size a memfd on Linux and an IOSurface on macOS, and the wire header
 * carries their result so a peer never has to guess.
 *
 * @module
 */

/** The pixel formats a surface can have (CoreVideo four-character codes). */
export type PixelFormat = "BGRA" | "RGBA" | "L008" | "420v" | "420f" | "y420";

/** Every supported {@link PixelFormat}, in a stable order. */
export const PIXEL_FORMATS: readonly PixelFormat[] = [
  "BGRA",
  "RGBA",
  "L008",
  "420v",
  "420f",
  "y420",
];

/**
 * Common names accepted wherever a format is given, and what they stand for:
 * `"NV12"` is `"420v"` (video range; say `"420f"` for full range), `"I420"`
 * is `"y420"`, `"GRAY8"` is `"L008"`. A surface reports the canonical name.
 */
export const PIXEL_FORMAT_ALIASES = {
  NV12: "420v",
  I420: "y420",
  GRAY8: "L008",
} as const satisfies Record<string, PixelFormat>;

/** A common name of a {@link PixelFormat}: see {@link PIXEL_FORMAT_ALIASES}. */
export type PixelFormatAlias = keyof typeof PIXEL_FORMAT_ALIASES;

/**
 * The canonical {@link PixelFormat} of `format` (a format or an alias), or
 * `undefined` if it names neither.
 */
export function canonicalFormat(format: unknown): PixelFormat | undefined {
  if (isPixelFormat(format)) return format;
  if (typeof format === "string" && Object.hasOwn(PIXEL_FORMAT_ALIASES, format)) {
    return PIXEL_FORMAT_ALIASES[format as PixelFormatAlias];
  }
  return undefined;
}

/** Rows of every plane start on this many bytes (cache line and SIMD friendly). */
export const ROW_ALIGNMENT = 64;

/** A surface's total size is rounded up to this many bytes. */
export const ALLOC_ALIGNMENT = 4096;

/** No side of a surface may exceed this many pixels. */
export const MAX_DIMENSION = 32768;

/** The default upper bound on one surface's size: 1 GiB. */
export const DEFAULT_MAX_SURFACE_BYTES = 1 << 30;

/** The geometry of one plane inside a surface's memory. */
export interface PlaneGeometry {
  /** Width of the plane in elements (a 4:2:0 chroma plane is half the surface width). */
  readonly width: number;
  /** Height of the plane in rows. */
  readonly height: number;
  /** Bytes per element: 4 for BGRA, 1 for luma, 2 for interleaved CbCr. */
  readonly bytesPerElement: number;
  /** Bytes from the start of one row to the next (at least `width * bytesPerElement`). */
  readonly bytesPerRow: number;
  /** Byte offset of the plane's first row from the start of the surface. */
  readonly offset: number;
}

/** The full memory layout of a surface. */
export interface SurfaceGeometry {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** The pixel format. */
  readonly format: PixelFormat;
  /** The planes, in index order (Y, Cb, Cr); their offsets may be in any order. */
  readonly planes: readonly PlaneGeometry[];
  /** Total bytes of memory backing the surface (all planes, rounded up). */
  readonly allocSize: number;
}

interface FormatInfo {
  fourcc: number;
  /** [bytesPerElement, horizontal subsampling, vertical subsampling] per plane. */
  planes: readonly (readonly [number, number, number])[];
}

const FORMAT_INFO: Record<PixelFormat, FormatInfo> = {
  BGRA: { fourcc: 0x42475241, planes: [[4, 1, 1]] },
  RGBA: { fourcc: 0x52474241, planes: [[4, 1, 1]] },
  L008: { fourcc: 0x4c303038, planes: [[1, 1, 1]] },
  "420v": { fourcc: 0x34323076, planes: [[1, 1, 1], [2, 2, 2]] },
  "420f": { fourcc: 0x34323066, planes: [[1, 1, 1], [2, 2, 2]] },
  y420: { fourcc: 0x79343230, planes: [[1, 1, 1], [1, 2, 2], [1, 2, 2]] },
};

/** The big-endian four-character code of a format, e.g. `0x42475241` for `"BGRA"`. */
export function fourccOf(format: PixelFormat): number {
  return FORMAT_INFO[format].fourcc;
}

/** The format whose four-character code is `fourcc`, or `undefined`. */
export function formatOfFourcc(fourcc: number): PixelFormat | undefined {
  for (const format of PIXEL_FORMATS) {
    if (FORMAT_INFO[format].fourcc === fourcc) return format;
  }
  return undefined;
}

/** True if `value` names a supported pixel format. */
export function isPixelFormat(value: unknown): value is PixelFormat {
  return typeof value === "string" && Object.hasOwn(FORMAT_INFO, value);
}

/** Rounds `value` up to a multiple of `alignment` (a power of two). */
export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function checkDimension(name: string, value: unknown): number {
  if (typeof value !== "number") {
    throw new TypeError(`${name} must be a number, got ${typeof value}`);
  }
  if (!Number.isInteger(value) || value <= 0 || value > MAX_DIMENSION) {
    throw new RangeError(`${name} must be an integer from 1 to ${MAX_DIMENSION}, got ${value}`);
  }
  return value;
}

/**
 * Computes the layout of a `width` x `height` surface of `format`: planes in
 * order, rows aligned to {@link ROW_ALIGNMENT}, the total rounded up to
 * {@link ALLOC_ALIGNMENT}. Throws `TypeError` / `RangeError` on bad input,
 * before anything is allocated.
 */
export function computeGeometry(
  width: unknown,
  height: unknown,
  requestedFormat: unknown = "BGRA",
  maxBytes: number = DEFAULT_MAX_SURFACE_BYTES,
): SurfaceGeometry {
  const w = checkDimension("width", width);
  const h = checkDimension("height", height);
  const format = canonicalFormat(requestedFormat);
  if (format === undefined) {
    throw new TypeError(
      `unknown pixel format ${JSON.stringify(requestedFormat)}; use one of ${
        PIXEL_FORMATS.join(", ")
      } ` +
        `(or the aliases ${Object.keys(PIXEL_FORMAT_ALIASES).join(", ")})`,
    );
  }
  const info = FORMAT_INFO[format];
  if (info.planes.length > 1 && (w % 2 !== 0 || h % 2 !== 0)) {
    throw new RangeError(
      `${format} is 4:2:0 subsampled: width and height must be even, got ${w}x${h}`,
    );
  }
  const planes: PlaneGeometry[] = [];
  let offset = 0;
  for (const [bytesPerElement, sx, sy] of info.planes) {
    const pw = w / sx;
    const ph = h / sy;
    const bytesPerRow = alignUp(pw * bytesPerElement, ROW_ALIGNMENT);
    planes.push({ width: pw, height: ph, bytesPerElement, bytesPerRow, offset });
    offset += bytesPerRow * ph;
  }
  const allocSize = alignUp(offset, ALLOC_ALIGNMENT);
  if (allocSize > maxBytes) {
    throw new RangeError(
      `a ${w}x${h} ${format} surface needs ${allocSize} bytes, over the limit of ${maxBytes}` +
        " (raise it with the maxBytes option)",
    );
  }
  return { width: w, height: h, format, planes, allocSize };
}

/**
 * Checks a geometry that came from elsewhere (a peer's header): each plane has
 * the element size its format implies, rows hold their elements, every plane
 * (`bytesPerRow × height` bytes from its offset, the last row's padding
 * included) lies inside `allocSize`, and no two planes overlap. Planes are in
 * index order (Y, Cb, Cr); their offsets may be in any order. `allocSize` may
 * exceed what the planes need and need not be a multiple of 4096. Returns a
 * description of the first problem, or `undefined` if it is sound.
 */
export function validateGeometry(geometry: SurfaceGeometry): string | undefined {
  const { width, height, format, planes, allocSize } = geometry;
  if (!isPixelFormat(format)) return `unknown format ${String(format)}`;
  if (!Number.isSafeInteger(allocSize) || allocSize <= 0) return `bad allocSize ${allocSize}`;
  // Two checks, not a loop over [name, value] pairs: this runs per received frame.
  if (!Number.isInteger(width) || width <= 0 || width > MAX_DIMENSION) return `bad width ${width}`;
  if (!Number.isInteger(height) || height <= 0 || height > MAX_DIMENSION) {
    return `bad height ${height}`;
  }
  const info = FORMAT_INFO[format];
  if (planes.length !== info.planes.length) {
    return `${format} has ${info.planes.length} planes, header says ${planes.length}`;
  }
  if (info.planes.length > 1 && (width % 2 !== 0 || height % 2 !== 0)) {
    return `${format} needs even dimensions, got ${width}x${height}`;
  }
  for (let i = 0; i < planes.length; i++) {
    const p = planes[i];
    // By index, not destructured: an array pattern runs the iterator protocol, and this is per frame.
    const shape = info.planes[i];
    const bpe = shape[0], sx = shape[1], sy = shape[2];
    if (p.width !== width / sx || p.height !== height / sy || p.bytesPerElement !== bpe) {
      return `plane ${i} is ${p.width}x${p.height}x${p.bytesPerElement}, ` +
        `expected ${width / sx}x${height / sy}x${bpe}`;
    }
    if (!Number.isSafeInteger(p.bytesPerRow) || p.bytesPerRow < p.width * bpe) {
      return `plane ${i} bytesPerRow ${p.bytesPerRow} is shorter than a row`;
    }
    if (
      !Number.isSafeInteger(p.offset) || p.offset < 0 ||
      p.offset + p.bytesPerRow * p.height > allocSize
    ) {
      return `plane ${i} (offset ${p.offset}, ${p.bytesPerRow}x${p.height}) overruns allocSize ${allocSize}`;
    }
    for (let j = 0; j < i; j++) {
      const q = planes[j];
      if (
        p.offset < q.offset + q.bytesPerRow * q.height &&
        q.offset < p.offset + p.bytesPerRow * p.height
      ) {
        return `plane ${i} (bytes ${p.offset}-${
          p.offset + p.bytesPerRow * p.height - 1
        }) overlaps plane ${j}`;
      }
    }
  }
  return undefined;
}

/** Byte length of plane `index`: `bytesPerRow * height`. */
export function planeByteLength(plane: PlaneGeometry): number {
  return plane.bytesPerRow * plane.height;
}
