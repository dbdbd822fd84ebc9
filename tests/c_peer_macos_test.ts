/**
 * The foreign macOS peer (`tests/peers/c_peer_macos.c`, written from
 * docs/macos.md and docs/protocol.md alone).
 *
 * - On Linux with `MACOS_SDK` set: compiled with clang-19 for arm64 and
 *   x86_64 against the SDK headers (`-Werror`) and linked strictly with
 *   ld64.lld-19 against the SDK's IOSurface and CoreFoundation stubs and
 *   minimal libSystem/libbsm stubs; each binary must load only those four
 *   libraries, and the arm64 one must carry a valid ad-hoc signature (an
 *   arm64 Mac runs nothing unsigned). Without `MACOS_SDK` it says it is
 *   skipped.
 * - On macOS (`.github/workflows/macos.yml`): built with the system `cc` and
 *   run against the library: it connects and receives, echoes surfaces
 *   back, and listens and sends surfaces of its own.
 */

import assert from "node:assert/strict";
import { type Channel, connect, listen, type PixelFormat, prepareNative, Surface } from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { checkAdhocSignature, loadCommands } from "../tools/macho.ts";
import { defaultLibsystemExports } from "../tools/sdk_facts.ts";
import { Child, uniqueName } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;
const source = `${root}tests/peers/c_peer_macos.c`;
/** The flags both builds use (-fno-builtin: no libc calls the compiler invents, e.g. memset_pattern16). */
const CFLAGS = ["-std=c11", "-O2", "-fno-builtin", "-Wall", "-Wextra", "-Werror"];
const sdk = Deno.env.get("MACOS_SDK");
const macOS = Deno.build.os === "darwin";
if (!sdk && !macOS) console.log("c_peer_macos: cross build skipped: MACOS_SDK is not set");

const text = new TextDecoder();

async function run(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  assert.ok(
    result.success,
    `${command} ${args.join(" ")} failed:\n${text.decode(result.stdout)}${
      text.decode(result.stderr)
    }`,
  );
  return text.decode(result.stdout);
}

/** The LC_LOAD_DYLIB names of a thin Mach-O image. */
function loadedLibraries(image: Uint8Array): string[] {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  return loadCommands(image).filter((c) => c.cmd === 0xc).map(({ offset, size }) => {
    const at = offset + view.getUint32(offset + 8, true);
    const end = image.indexOf(0, at);
    return text.decode(image.subarray(at, Math.min(end, offset + size)));
  });
}

Deno.test({
  name: `c_peer_macos: compiles and links strictly for arm64 and x86_64 against the SDK${
    sdk ? "" : " (skipped: MACOS_SDK not set)"
  }`,
  ignore: !sdk,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "c-peer-macos-" });
    try {
      const exports = `${dir}/exports.txt`;
      await Deno.writeTextFile(
        exports,
        (await Deno.readTextFile(defaultLibsystemExports())) +
          (await Deno.readTextFile(`${root}tests/peers/c_peer_macos-exports.txt`)),
      );
      const arches = ["arm64", "x86_64"];
      for (const arch of arches) {
        await run("clang-19", [
          "-target",
          `${arch}-apple-macos11.0`,
          ...CFLAGS,
          "-nostdlibinc",
          "-isystem",
          `${sdk}/include`,
          "-iframework",
          `${sdk}/Frameworks`,
          "-c",
          "-o",
          `${dir}/${arch}.o`,
          source,
        ]);
      }
      const imports = (await run("llvm-nm-19", [
        "-u",
        "--just-symbol-name",
        ...arches.map((a) => `${dir}/${a}.o`),
      ]))
        .split("\n").filter((s) => s !== "" && !s.endsWith(":"));
      // Stubs for the libSystem/libbsm symbols; the frameworks' come from the SDK.
      const frameworkSymbols = /^_(CF|kCF|IOSurface|kIOSurface)/;
      await run("sh", [
        `${root}native/libsystem-stubs.sh`,
        exports,
        `${dir}/stubs`,
        "dyld_stub_binder",
        ...imports.filter((s) => !frameworkSymbols.test(s)),
      ]);
      // CoreFoundation re-exports /usr/lib/libobjc.A.dylib: the linker finds its stub (the SDK's
      // lib/libobjc.A.tbd) under -syslibroot, as usr/lib/.
      await Deno.mkdir(`${dir}/root/usr`, { recursive: true });
      await Deno.symlink(`${sdk}/lib`, `${dir}/root/usr/lib`);
      for (const arch of arches) {
        const binary = `${dir}/c_peer_macos-${arch}`;
        await run("ld64.lld-19", [
          "-arch",
          arch,
          "-platform_version",
          "macos",
          "11.0",
          "14.0",
          "-Z",
          "-fatal_warnings",
          "-syslibroot",
          `${dir}/root`,
          "-L",
          `${dir}/stubs`,
          "-F",
          `${sdk}/Frameworks`,
          "-lSystem",
          "-lbsm",
          "-framework",
          "IOSurface",
          "-framework",
          "CoreFoundation",
          "-o",
          binary,
          `${dir}/${arch}.o`,
        ]);
        const image = await Deno.readFile(binary);
        assert.deepEqual(loadedLibraries(image).sort(), [
          "/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation",
          "/System/Library/Frameworks/IOSurface.framework/Versions/A/IOSurface",
          "/usr/lib/libSystem.B.dylib",
          "/usr/lib/libbsm.0.dylib",
        ]);
        if (arch === "arm64") {
          assert.deepEqual(await checkAdhocSignature(image), { signed: true, problems: [] });
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// --- on a Mac: run it against the library ------------------------------------------

let binary: string | undefined;
async function peerBinary(): Promise<string> {
  if (binary) return binary;
  const out = `${await Deno.makeTempDir({ prefix: "c-peer-macos-" })}/c_peer_macos`;
  await run("cc", [
    ...CFLAGS,
    "-o",
    out,
    source,
    "-framework",
    "IOSurface",
    "-framework",
    "CoreFoundation",
    "-lbsm",
  ]);
  return (binary = out);
}

function seedMeta(seed: number): Uint8Array {
  return new Uint8Array(new Uint32Array([seed]).buffer);
}

function seedOf(meta: unknown): number {
  assert.ok(meta instanceof Uint8Array && meta.length === 4, "4 bytes of metadata");
  return new DataView(meta.buffer, meta.byteOffset, 4).getUint32(0, true);
}

const why = macOS ? "" : ` (macOS only — skipped on ${Deno.build.os})`;
const cases: [number, number, PixelFormat][] = [
  [1920, 1080, "BGRA"],
  [1280, 720, "420v"],
  [640, 480, "y420"],
  [100, 60, "L008"],
];

async function withConnectedPeer(
  mode: string,
  count: number,
  body: (peer: Child, channel: Channel) => Promise<void>,
) {
  await prepareNative();
  const name = uniqueName("cmac");
  using listener = listen(name);
  await using peer = new Child(await peerBinary(), [mode, name, String(count)]);
  using channel = await listener.accept({ timeout: 10000 });
  await peer.line("connected");
  await body(peer, channel);
  await peer.line("done");
  assert.equal((await peer.exit()).code, 0, peer.stderr);
}

Deno.test({
  name: `c_peer_macos: receives surfaces of every format from surfaceport and verifies them${why}`,
  ignore: !macOS,
  async fn() {
    await withConnectedPeer("recv", cases.length, async (peer, channel) => {
      for (let i = 0; i < cases.length; i++) {
        const [width, height, format] = cases[i];
        using surface = Surface.create({ width, height, format });
        fillPattern(surface, 40 + i);
        await channel.send(surface, seedMeta(40 + i));
        await peer.line(`ok ${i}`);
      }
    });
  },
});

Deno.test({
  name: `c_peer_macos: echoes surfaces back, written through the same IOSurface${why}`,
  ignore: !macOS,
  async fn() {
    await withConnectedPeer("echo", 3, async (_peer, channel) => {
      for (let i = 0; i < 3; i++) {
        using surface = Surface.create({ width: 640, height: 480, format: "420v" });
        fillPattern(surface, 7 + i);
        await channel.send(surface, seedMeta(7 + i));
        using frame = await channel.receive({ timeout: 10000 });
        assert.equal(seedOf(frame.meta), 8 + i);
        assert.equal(frame.surface.id, surface.id, "the same IOSurface came back");
        assert.equal(verifyPattern(frame.surface, 8 + i), undefined);
      }
    });
  },
});

Deno.test({
  name:
    `c_peer_macos: listens and sends its own surfaces; surfaceport connects and verifies them${why}`,
  ignore: !macOS,
  async fn() {
    await prepareNative();
    for (const [width, height, format] of cases) {
      const name = uniqueName("cmacs");
      await using peer = new Child(await peerBinary(), [
        "serve",
        name,
        "2",
        String(width),
        String(height),
        format,
      ]);
      await peer.line("listening");
      {
        using channel = await connect(name, { timeout: 10000 });
        for (let k = 0; k < 2; k++) {
          using frame = await channel.receive({ timeout: 10000 });
          assert.equal(frame.surface.format, format);
          assert.equal(seedOf(frame.meta), k);
          assert.equal(verifyPattern(frame.surface, k), undefined);
        }
      } // closing the channel ends the peer's wait (no-senders notification)
      await peer.line("done");
      assert.equal((await peer.exit()).code, 0, peer.stderr);
    }
  },
});
