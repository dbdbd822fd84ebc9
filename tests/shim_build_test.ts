/**
 * The universal shim shipped in the package
 * (`native/prebuilt/libsurfaceport_shim.dylib`): its SHA-256 is the one the
 * loader checks, its slices are what a Mac build makes (arm64 + x86_64,
 * minos 11.0, arm64 ad-hoc signed with every page hash right), and the
 * loader refuses any other file. With `MACOS_SDK` set, `make -C native
 * cross` is run twice into fresh directories: both builds must be byte for
 * byte the committed dylib. Nothing here runs macOS code.
 */

import assert from "node:assert/strict";
import { PREBUILT_SHIM_SOURCES_SHA256 } from "../ffi/darwin_prebuilt.ts";
import {
  PREBUILT_SHIM_SHA256,
  PREBUILT_SHIM_URL,
  prebuiltShimPath,
  type ShimDownload,
  verifyPrebuiltShim,
} from "../ffi/darwin.ts";
import { LibraryLoadError } from "../src/core/errors.ts";
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

Deno.test("prebuilt shim: the loader's SHA-256 check accepts the shipped file and refuses any other", async () => {
  await verifyPrebuiltShim(prebuilt, "test");
  const dir = await Deno.makeTempDir({ prefix: "surfaceport-shim-" });
  try {
    const bytes = await Deno.readFile(prebuilt);
    bytes[bytes.length - 1] ^= 0xff;
    await Deno.writeFile(`${dir}/libsurfaceport_shim.dylib`, bytes);
    await assert.rejects(
      () => verifyPrebuiltShim(`${dir}/libsurfaceport_shim.dylib`, "test"),
      (e: unknown) =>
        e instanceof LibraryLoadError && /SHA-256 [0-9a-f]{64}, not the shipped/.test(e.message),
    );
    await assert.rejects(
      () => verifyPrebuiltShim(`${dir}/missing.dylib`, "test"),
      LibraryLoadError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prebuilt shim: from a remote package it is fetched through plug, verified, fetched again once if stale", async () => {
  assert.equal(await prebuiltShimPath(), prebuilt); // a checkout: the file itself
  const dir = await Deno.makeTempDir({ prefix: "surfaceport-plug-" });
  try {
    const good = `${dir}/good.dylib`, bad = `${dir}/bad.dylib`;
    await Deno.copyFile(prebuilt, good);
    const damaged = await Deno.readFile(prebuilt);
    damaged[100] ^= 1;
    await Deno.writeFile(bad, damaged);
    const remote = new URL(
      "https://jsr.io/@surfaceport/surfaceport/0.1.0/native/prebuilt/libsurfaceport_shim.dylib",
    );
    const calls: string[] = [];
    const fake = (answers: string[]): () => Promise<ShimDownload> => () =>
      Promise.resolve(({ name, url, cache }) => {
        calls.push(`${name} ${url} ${cache}`);
        const answer = answers.shift();
        return answer === undefined
          ? Promise.reject(new Error("offline"))
          : Promise.resolve(answer);
      });

    assert.equal(await prebuiltShimPath(remote, fake([good])), good);
    assert.deepEqual(calls.splice(0), [
      "surfaceport_shim https://jsr.io/@surfaceport/surfaceport/0.1.0/native/prebuilt/ use",
    ]);
    // A damaged cache entry is fetched again, then used only if it verifies.
    assert.equal(await prebuiltShimPath(remote, fake([bad, good])), good);
    assert.deepEqual(calls.splice(0).map((c) => c.split(" ")[2]), ["use", "reload"]);
    await assert.rejects(
      () => prebuiltShimPath(remote, fake([bad, bad])),
      (e: unknown) => e instanceof LibraryLoadError && /refusing to load it/.test(e.message),
    );
    await assert.rejects(
      () => prebuiltShimPath(remote, fake([])),
      (e: unknown) => e instanceof LibraryLoadError && /could not fetch/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
