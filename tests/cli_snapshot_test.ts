/**
 * The `surfaceport` command line, run as a user runs it (`deno run
 * cli/main.ts ...` in a child process): snapshot of every pixel format (the
 * PNG decoded and compared with the source pixels, computed here from the
 * standards), and the usage errors of bad arguments.
 */
import assert from "node:assert/strict";
import { decode } from "fast-png";
import { type PixelFormat, Surface } from "../mod.ts";
import { openProducer } from "../cli/source.ts";
import { uniqueName } from "./helpers.ts";
import { runCli } from "./cli_helpers.ts";

const linux = Deno.build.os === "linux";

/** Reference Y'CbCr → RGB, written here from the standards (float, then rounded). */
function referenceRGB(
  y: number,
  cb: number,
  cr: number,
  matrix: "bt601" | "bt709",
  full: boolean,
): number[] {
  const [kr, kb] = matrix === "bt601" ? [0.299, 0.114] : [0.2126, 0.0722];
  const Y = full ? y / 255 : (y - 16) / 219;
  const Pb = full ? (cb - 128) / 255 : (cb - 128) / 224;
  const Pr = full ? (cr - 128) / 255 : (cr - 128) / 224;
  const R = Y + 2 * (1 - kr) * Pr;
  const B = Y + 2 * (1 - kb) * Pb;
  const G = (Y - kr * R - kb * B) / (1 - kr - kb);
  return [R, G, B].map((v) => Math.max(0, Math.min(255, Math.round(v * 255))));
}

/** Fills every plane with bytes that vary by position (chroma kept in a plausible range). */
function fillSource(surface: Surface): void {
  for (let p = 0; p < surface.planes.length; p++) {
    const bytes = surface.bytes(p);
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = p === 0 ? (i * 7 + (i >> 6) * 3) & 0xff : 64 + ((i * 5) & 0x7f);
    }
  }
}

/** The RGBA the source surface shows at (x, y), computed from its bytes here. */
function sourcePixel(surface: Surface, x: number, y: number, matrix: "bt601" | "bt709"): number[] {
  const planes = surface.planes;
  const at = (p: number, offset: number) => surface.bytes(p)[offset];
  switch (surface.format) {
    case "BGRA": {
      const o = y * planes[0].bytesPerRow + x * 4;
      return [at(0, o + 2), at(0, o + 1), at(0, o), at(0, o + 3)];
    }
    case "RGBA": {
      const o = y * planes[0].bytesPerRow + x * 4;
      return [at(0, o), at(0, o + 1), at(0, o + 2), at(0, o + 3)];
    }
    case "L008": {
      const v = at(0, y * planes[0].bytesPerRow + x);
      return [v, v, v, 255];
    }
    default: {
      const luma = at(0, y * planes[0].bytesPerRow + x);
      const cy = y >> 1, cx = x >> 1;
      const [cb, cr] = surface.format === "y420"
        ? [at(1, cy * planes[1].bytesPerRow + cx), at(2, cy * planes[2].bytesPerRow + cx)]
        : [
          at(1, cy * planes[1].bytesPerRow + cx * 2),
          at(1, cy * planes[1].bytesPerRow + cx * 2 + 1),
        ];
      return [...referenceRGB(luma, cb, cr, matrix, surface.format === "420f"), 255];
    }
  }
}

const SNAPSHOT_CASES: [PixelFormat, "bt601" | "bt709" | undefined][] = [
  ["BGRA", undefined],
  ["RGBA", undefined],
  ["L008", undefined],
  ["420v", "bt601"],
  ["420v", "bt709"],
  ["420f", "bt709"],
  ["y420", undefined], // default matrix: BT.601 for 96 rows
];

Deno.test({
  name: "cli snapshot: a PNG per pixel format, decoded and compared with the source pixels",
  ignore: !linux,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "surfaceport-snapshot-" });
    try {
      for (const [format, matrix] of SNAPSHOT_CASES) {
        const name = uniqueName("cli-snap");
        using producer = openProducer(name);
        using surface = Surface.create({ width: 128, height: 96, format });
        fillSource(surface);
        const out = `${dir}/${format}-${matrix ?? "default"}.png`;
        const done = runCli(["snapshot", name, out, ...(matrix ? ["--matrix", matrix] : [])]);
        let finished = false;
        done.finally(() => (finished = true));
        while (!finished) {
          await producer.send(surface, { format });
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const { code, stdout, stderr } = await done;
        assert.equal(code, 0, stderr);
        const used = matrix ?? "bt601";
        assert.match(stdout, new RegExp(`^wrote ${out}: ${format} 128x96, frame \\d+`));
        if (format.startsWith("420") || format === "y420") {
          assert.match(stdout, new RegExp(`matrix ${used}`));
          assert.match(stdout, format === "420f" ? /full range/ : /video range/);
        }
        const png = decode(Deno.readFileSync(out));
        assert.equal(png.width, 128);
        assert.equal(png.height, 96);
        assert.equal(png.channels, 4);
        assert.equal(png.depth, 8);
        let worst = 0;
        for (let y = 0; y < 96; y++) {
          for (let x = 0; x < 128; x++) {
            const expected = sourcePixel(surface, x, y, used);
            for (let c = 0; c < 4; c++) {
              worst = Math.max(worst, Math.abs(png.data[(y * 128 + x) * 4 + c] - expected[c]));
            }
          }
        }
        // RGB and grey are copied exactly; YCbCr within one step of the float reference.
        assert.ok(
          worst <= (format === "BGRA" || format === "RGBA" || format === "L008" ? 0 : 1),
          `${format} ${used}: worst difference ${worst}`,
        );
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli snapshot / watch: bad arguments give usage errors (exit 2), a missing stream exit 1",
  ignore: !linux,
  async fn() {
    const bad = await runCli(["snapshot", "x", "--matrix", "bt2020"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--matrix must be bt601 or bt709/);
    assert.match(bad.stderr, /usage: surfaceport snapshot/);
    const missing = await runCli(["watch", uniqueName("nobody"), "--timeout", "0"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^surfaceport watch: /);
    const unknown = await runCli(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const help = await runCli(["help"]);
    for (const command of ["list", "watch", "snapshot", "preview", "testcard"]) {
      assert.match(help.stdout, new RegExp(`^  ${command} `, "m"));
    }
  },
});
