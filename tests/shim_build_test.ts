/**
 * The universal shim shipped in the package
 * (`native/prebuilt/libsurfaceport_shim.dylib`): its SHA-256 is the one the
 * loader checks, its slices are what a Mac build makes (arm64 + x86_64,
 * minos 11.0, arm64 ad-hoc signed with every page hash right), and the
 * loader refuses any other file. With `MACOS_SDK` set, `make -C native
 * cross` is run twice into fresh directories: both builds must be byte for
 * byte the committed dylib; the copy in the module graph is the same bytes.
 * Nothing here runs macOS code (the loader's decisions: shim_load_test.ts).
 */

import assert from "node:assert/strict";
import { PREBUILT_SHIM_SOURCES_SHA256 } from "../ffi/darwin_prebuilt.ts";
import { PREBUILT_SHIM_SHA256, PREBUILT_SHIM_URL } from "../ffi/darwin.ts";
import { unpackShim } from "../ffi/darwin_shim.ts";
import { EMBEDDED_SHIM_PACKED, EMBEDDED_SHIM_SHA256 } from "../ffi/darwin_shim_embedded.ts";
import { packShim } from "../tools/embed_shim.ts";
import { checkAdhocSignature, fatSlices, minimumOs, sha256Hex } from "../tools/macho.ts";

const root = new URL("..", import.meta.url).pathname;
const prebuilt = decodeURIComponent(PREBUILT_SHIM_URL.pathname);
const sdk = Deno.env.get("MACOS_SDK");
if (!sdk) console.log("shim build: cross-build test skipped: MACOS_SDK is not set");

Deno.test("prebuilt shim: the committed dylib's SHA-256 is the one ffi/darwin_prebuilt.ts holds", async () => {
  assert.equal(prebuilt, `${root}native/prebuilt/libsurfaceport_shim.dylib`);
  assert.equal(await sha256Hex(await Deno.readFile(prebuilt)), PREBUILT_SHIM_SHA256);
});

Deno.test("prebuilt shim: it was built from the committed native/shim.m, Makefile and stub script", async () => {
  const sources = await Promise.all(
    ["shim.m", "Makefile", "libsystem-stubs.sh"].map((f) => Deno.readFile(`${root}native/${f}`)),
  );
  const all = new Uint8Array(sources.reduce((n, s) => n + s.length, 0));
  sources.reduce((at, s) => (all.set(s, at), at + s.length), 0);
  assert.equal(
    await sha256Hex(all),
    PREBUILT_SHIM_SOURCES_SHA256,
    "the shim's sources changed since native/prebuilt was built: run " +
      "`make -C native prebuilt MACOS_SDK=…` (docs/macos.md) and commit native/prebuilt and ffi/darwin_prebuilt.ts",
  );
});

Deno.test("prebuilt shim: universal arm64 + x86_64, minos 11.0, arm64 validly ad-hoc signed", async () => {
  const slices = fatSlices(await Deno.readFile(prebuilt));
  assert.deepEqual([...slices.keys()].sort(), ["arm64", "x86_64"]);
  for (const [arch, image] of slices) assert.equal(minimumOs(image), "11.0", arch);
  const arm64 = await checkAdhocSignature(slices.get("arm64")!);
  assert.deepEqual(arm64, { signed: true, problems: [] });
  // The check can fail: one flipped byte in a signed page breaks its hash.
  const damaged = slices.get("arm64")!.slice();
  damaged[0x700] ^= 1;
  assert.deepEqual((await checkAdhocSignature(damaged)).problems, ["page 0: hash mismatch"]);
});

Deno.test("prebuilt shim: the copy in the module graph (ffi/darwin_shim_embedded.ts) is the committed dylib", async () => {
  const dylib = await Deno.readFile(prebuilt);
  assert.equal(EMBEDDED_SHIM_SHA256, PREBUILT_SHIM_SHA256);
  assert.deepEqual(
    unpackShim(EMBEDDED_SHIM_PACKED),
    dylib,
    "ffi/darwin_shim_embedded.ts is stale: run `deno task embed-shim` and commit it",
  );
  // The packing round-trips anything, not just this file.
  for (const sample of [new Uint8Array(0), new Uint8Array(40), Uint8Array.of(1, 0, 0, 2)]) {
    const packed = btoa(String.fromCharCode(...packShim(sample)));
    assert.deepEqual(unpackShim(packed), sample);
  }
  assert.ok(EMBEDDED_SHIM_PACKED.length < dylib.length / 2, "zero runs are packed");
});

/** Runs `make -C native TARGET MACOS_SDK=… BUILD=dir`, with a timeout. */
async function makeNative(target: string, build: string): Promise<void> {
  const result = await new Deno.Command("make", {
    args: ["-C", `${root}native`, target, `MACOS_SDK=${sdk}`, `BUILD=${build}`],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const text = new TextDecoder();
  assert.ok(
    result.success,
    `make ${target} failed:\n${text.decode(result.stdout)}\n${text.decode(result.stderr)}`,
  );
}

Deno.test({
  name: `shim build: make -C native cross twice gives the committed dylib byte for byte${
    sdk ? "" : " (skipped: MACOS_SDK not set)"
  }`,
  ignore: !sdk,
  async fn() {
    const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
    try {
      for (const dir of dirs) await makeNative("cross-check", dir);
      const [first, second] = await Promise.all(
        dirs.map((dir) => Deno.readFile(`${dir}/libsurfaceport_shim.dylib`)),
      );
      assert.deepEqual(first, second, "two cross builds differ");
      assert.equal(
        await sha256Hex(first),
        PREBUILT_SHIM_SHA256,
        "a fresh cross build is not the committed native/prebuilt dylib: " +
          "run `make -C native prebuilt MACOS_SDK=…` and commit both files",
      );
    } finally {
      for (const dir of dirs) await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("libsystem-stubs.sh: reads the repository's supplement beside the shared exports; an unlisted or twice-listed symbol fails the run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libsystem-stubs-" });
  try {
    // A stand-in for ../shared/macos/libsystem-exports.txt (not in every checkout), same format.
    const shared = `${dir}/shared.txt`;
    const source = "MacOSX11.3.sdk/usr/lib/system/libsystem_kernel.tbd@" + "0".repeat(40);
    await Deno.writeTextFile(
      shared,
      `# symbol\tinstall-name\tsource\n_mach_msg\t/usr/lib/system/libsystem_kernel.dylib\t${source}\n`,
    );
    const supplement = `${root}native/libsystem-exports-local.txt`;
    const stubs = async (exports: string, out: string, ...symbols: string[]) => {
      const { code, stderr } = await new Deno.Command("sh", {
        args: [`${root}native/libsystem-stubs.sh`, exports, `${dir}/${out}`, ...symbols],
        stderr: "piped",
      }).output();
      return { code, stderr: new TextDecoder().decode(stderr) };
    };

    assert.equal((await stubs(`${shared}:${supplement}`, "ok", "_mach_msg", "_kill")).code, 0);
    const tbd = await Deno.readTextFile(`${dir}/ok/libSystem.tbd`);
    assert.match(tbd, /install-name: '\/usr\/lib\/system\/libsystem_kernel\.dylib'/);
    assert.match(tbd, /symbols: \[ _kill, _mach_msg \]/);

    const unlisted = await stubs(shared, "unlisted", "_mach_msg", "_kill");
    assert.notEqual(unlisted.code, 0, "a symbol only the supplement lists, without it");
    assert.match(unlisted.stderr, /not exported by libSystem or libbsm per .*: _kill/);

    const twice = await stubs(`${supplement}:${supplement}`, "twice", "_kill");
    assert.notEqual(twice.code, 0);
    assert.match(twice.stderr, /is listed twice/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
