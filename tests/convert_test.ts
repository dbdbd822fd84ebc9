/**
 * toRGBA against reference values computed here, independently of the
 * library: the published 8-bit values of 75% colour bars for BT.601 and
 * BT.709 (video range), and the standards' forward equations for full range.
 */
import assert from "node:assert/strict";
import { type PixelFormat, Surface, toRGBA, type YCbCrMatrix } from "../mod.ts";

type RGB = readonly [number, number, number];

/** 75% bars in order: white, yellow, cyan, green, magenta, red, blue (RGB 191 = 0.75). */
const BARS_RGB: readonly RGB[] = [
  [191, 191, 191],
  [191, 191, 0],
  [0, 191, 191],
  [0, 191, 0],
  [191, 0, 191],
  [191, 0, 0],
  [0, 0, 191],
];
/** The same bars as 8-bit video-range Y'CbCr, as tabulated for each standard. */
const BARS_YCBCR: Record<YCbCrMatrix, readonly RGB[]> = {
  bt601: [
    [180, 128, 128],
    [162, 44, 142],
    [131, 156, 44],
    [112, 72, 58],
    [84, 184, 198],
    [65, 100, 212],
    [35, 212, 114],
  ],
  bt709: [
    [180, 128, 128],
    [168, 44, 136],
    [145, 147, 44],
    [134, 63, 52],
    [63, 193, 204],
    [51, 109, 212],
    [28, 212, 120],
  ],
};

const K: Record<YCbCrMatrix, [number, number]> = { bt601: [0.299, 0.114], bt709: [0.2126, 0.0722] };

/** RGB (0–255) to Y'CbCr code values by the standards' forward equations. */
function encode(rgb: RGB, matrix: YCbCrMatrix, full: boolean): RGB {
  const [kr, kb] = K[matrix];
  const [r, g, b] = rgb.map((v) => v / 255);
  const y = kr * r + (1 - kr - kb) * g + kb * b;
  const pb = (b - y) / (2 * (1 - kb));
  const pr = (r - y) / (2 * (1 - kr));
  const q = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  return full
    ? [q(255 * y), q(128 + 255 * pb), q(128 + 255 * pr)]
    : [q(16 + 219 * y), q(128 + 224 * pb), q(128 + 224 * pr)];
}

/** Writes one Y'CbCr colour per 8x8 block (colours[block index]) into a 4:2:0 surface. */
function paintYCbCr(surface: Surface, colourAt: (bx: number, by: number) => RGB): void {
  const [lp, cp] = surface.planes;
  const luma = surface.bytes(0), cb = surface.bytes(1);
  const cr = surface.format === "y420" ? surface.bytes(2) : undefined;
  for (let y = 0; y < surface.height; y++) {
    for (let x = 0; x < surface.width; x++) {
      const [Y, U, V] = colourAt(x >> 3, y >> 3);
      luma[y * lp.bytesPerRow + x] = Y;
      if ((x & 1) === 0 && (y & 1) === 0) {
        const cx = x >> 1, cy = y >> 1;
        if (cr) {
          cb[cy * cp.bytesPerRow + cx] = U;
          cr[cy * surface.planes[2].bytesPerRow + cx] = V;
        } else {
          cb[cy * cp.bytesPerRow + cx * 2] = U;
          cb[cy * cp.bytesPerRow + cx * 2 + 1] = V;
        }
      }
    }
  }
}

function assertNear(
  actual: Uint8Array,
  at: number,
  expected: RGB,
  tolerance: number,
  what: string,
) {
  for (let c = 0; c < 3; c++) {
    assert.ok(
      Math.abs(actual[at + c] - expected[c]) <= tolerance,
      `${what}: got ${[...actual.subarray(at, at + 4)]}, expected ${expected} ±${tolerance}`,
    );
  }
  assert.equal(actual[at + 3], 255, `${what}: alpha`);
}

for (const format of ["420v", "y420"] as const) {
  for (const matrix of ["bt601", "bt709"] as const) {
    Deno.test(`toRGBA: ${format} video range, ${matrix}, matches the tabulated 75% bars`, () => {
      using surface = Surface.create({ width: 56, height: 16, format });
      paintYCbCr(surface, (bx) => BARS_YCBCR[matrix][bx]);
      const rgba = toRGBA(surface, { matrix });
      for (let bar = 0; bar < 7; bar++) {
        for (const [x, y] of [[bar * 8, 0], [bar * 8 + 7, 15], [bar * 8 + 3, 9]]) {
          assertNear(rgba, (y * 56 + x) * 4, BARS_RGB[bar], 2, `${matrix} bar ${bar} at ${x},${y}`);
        }
      }
      // The other matrix gives visibly different colours: the test tells them apart.
      const other = toRGBA(surface, { matrix: matrix === "bt601" ? "bt709" : "bt601" });
      const differs = BARS_RGB.some((rgb, bar) =>
        rgb.some((v, c) => Math.abs(other[bar * 8 * 4 + c] - v) > 2)
      );
      assert.ok(differs, "decoding with the wrong matrix should not match the bars");
    });
  }
}

for (const format of ["420v", "420f", "y420"] as const) {
  for (const matrix of ["bt601", "bt709"] as const) {
    Deno.test(`toRGBA: ${format} ${matrix} inverts the forward equations for 256 colours`, () => {
      const full = format === "420f";
      const colours: RGB[] = [];
      for (let i = 0; i < 256; i++) {
        // Deterministic spread over the cube, corners included.
        colours.push([(i * 37) & 0xff, (i * 101 + 17) & 0xff, (i * 53 + 200) & 0xff]);
      }
      colours[0] = [0, 0, 0];
      colours[1] = [255, 255, 255];
      colours[2] = [255, 0, 0];
      colours[3] = [0, 0, 255];
      using surface = Surface.create({ width: 16 * 8, height: 16 * 8, format });
      paintYCbCr(surface, (bx, by) => encode(colours[by * 16 + bx], matrix, full));
      const rgba = toRGBA(surface, { matrix });
      for (let i = 0; i < 256; i++) {
        const x = (i % 16) * 8 + 4, y = Math.floor(i / 16) * 8 + 4;
        // Out-of-gamut colours do not exist in Y'CbCr; the cube's colours all do.
        assertNear(rgba, (y * 128 + x) * 4, colours[i], 2, `${format} ${matrix} colour ${i}`);
      }
    });
  }
}

Deno.test("toRGBA: BGRA and RGBA are reordered exactly, alpha kept; L008 is grey", () => {
  for (const format of ["BGRA", "RGBA", "L008"] as PixelFormat[]) {
    using surface = Surface.create({ width: 33, height: 7, format });
    const bytes = surface.bytes(0), stride = surface.planes[0].bytesPerRow;
    const bpe = format === "L008" ? 1 : 4;
    for (let y = 0; y < 7; y++) {
      for (let i = 0; i < 33 * bpe; i++) bytes[y * stride + i] = (y * 31 + i * 7) & 0xff;
    }
    const rgba = toRGBA(surface);
    for (let y = 0; y < 7; y++) {
      for (let x = 0; x < 33; x++) {
        const s = y * stride + x * bpe, d = (y * 33 + x) * 4;
        const expected = format === "BGRA"
          ? [bytes[s + 2], bytes[s + 1], bytes[s], bytes[s + 3]]
          : format === "RGBA"
          ? [bytes[s], bytes[s + 1], bytes[s + 2], bytes[s + 3]]
          : [bytes[s], bytes[s], bytes[s], 255];
        assert.deepEqual([...rgba.subarray(d, d + 4)], expected, `${format} ${x},${y}`);
      }
    }
  }
});

Deno.test("toRGBA: into a caller's buffer (no allocation), scaled output, a frame-like source", () => {
  using surface = Surface.create({ width: 64, height: 32, format: "RGBA" });
  const bytes = surface.bytes(0), stride = surface.planes[0].bytesPerRow;
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 64; x++) bytes.set([x * 4, y * 8, 7, 255], y * stride + x * 4);
  }
  const buffer = new Uint8Array(64 * 32 * 4 + 16);
  const out = toRGBA({ surface }, { into: buffer });
  assert.equal(out.buffer, buffer.buffer);
  assert.equal(out.length, 64 * 32 * 4);
  assert.deepEqual([...out.subarray((5 * 64 + 9) * 4, (5 * 64 + 9) * 4 + 4)], [36, 40, 7, 255]);
  const half = toRGBA(surface, { width: 32, height: 16 });
  assert.equal(half.length, 32 * 16 * 4);
  // Output pixel (3, 2) samples the centre of source pixels (6..7, 4..5): nearest is (7, 5).
  assert.deepEqual([...half.subarray((2 * 32 + 3) * 4, (2 * 32 + 3) * 4 + 4)], [28, 40, 7, 255]);
  assert.throws(() => toRGBA(surface, { into: new Uint8Array(10) }), RangeError);
  assert.throws(() => toRGBA(surface, { width: 0 }), RangeError);
  assert.throws(() => toRGBA({} as Surface), TypeError);
  surface.close();
  assert.throws(() => toRGBA(surface), /closed/);
});

Deno.test("toRGBA: the default matrix is BT.709 above 576 rows and BT.601 otherwise", () => {
  for (const [height, matrix] of [[576, "bt601"], [720, "bt709"]] as const) {
    using surface = Surface.create({ width: 16, height, format: "420v" });
    paintYCbCr(surface, () => BARS_YCBCR[matrix][1]);
    assertNear(toRGBA(surface), 0, BARS_RGB[1], 2, `height ${height}`);
  }
});

Deno.test("formats: NV12, I420 and GRAY8 are aliases of 420v, y420 and L008", () => {
  for (const [alias, canonical] of [["NV12", "420v"], ["I420", "y420"], ["GRAY8", "L008"]]) {
    using surface = Surface.create({ width: 8, height: 8, format: alias as PixelFormat });
    assert.equal(surface.format, canonical);
  }
  assert.throws(() => Surface.create({ width: 8, height: 8, format: "YUY2" as PixelFormat }), {
    name: "TypeError",
    message: /unknown pixel format "YUY2".*aliases NV12, I420, GRAY8/,
  });
});
