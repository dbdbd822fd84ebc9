/**
 * `deno task sdk-facts DIR`: regenerates `native/sdk-facts.json` from the
 * macOS SDK in DIR (include/ and Frameworks/, e.g. hexops/xcode-frameworks
 * unpacked), `../shared/macos/libsystem-exports.txt` (or the path in
 * `LIBSYSTEM_EXPORTS`) and its supplement `native/libsystem-exports-local.txt`, then prints every difference between the facts and
 * the TypeScript tables. Compiles with clang-19 (or `CLANG`); runs nothing
 * built for macOS. Exits 1 if the TypeScript disagrees with the SDK.
 *
 * @module
 */

import { compareWithFacts } from "./sdk_facts_compare.ts";
import { extractFacts } from "./sdk_facts_extract.ts";
import { FACTS_PATH } from "./sdk_facts_lib.ts";

const root = new URL("..", import.meta.url).pathname;

/** The default `libsystem-exports.txt`: `../shared` beside the checkout. */
export function defaultLibsystemExports(): string {
  const path = Deno.env.get("LIBSYSTEM_EXPORTS") ??
    `${root}../shared/macos/libsystem-exports.txt`;
  try {
    Deno.statSync(path);
  } catch {
    throw new Error(
      `${path} not found: set LIBSYSTEM_EXPORTS to shared/macos/libsystem-exports.txt`,
    );
  }
  return path;
}

if (import.meta.main) {
  const sdk = Deno.args[0] ?? Deno.env.get("MACOS_SDK");
  if (!sdk) {
    console.error(
      "usage: deno task sdk-facts DIR   (DIR: the macOS SDK with include/ and Frameworks/)",
    );
    Deno.exit(2);
  }
  const workDir = await Deno.makeTempDir({ prefix: "sdk-facts-" });
  try {
    const facts = await extractFacts({
      sdk,
      libsystemExports: defaultLibsystemExports(),
      clang: Deno.env.get("CLANG") ?? "clang-19",
      workDir,
    });
    const path = `${root}${FACTS_PATH}`;
    await Deno.writeTextFile(path, JSON.stringify(facts, null, 2) + "\n");
    await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", path] }).output();
    console.log(`wrote ${FACTS_PATH} (SDK ${facts.sdkVersion})`);
    const problems = compareWithFacts(facts);
    for (const problem of problems) console.log(`differs: ${problem}`);
    if (problems.length > 0) Deno.exit(1);
    console.log("the TypeScript tables agree with the SDK on arm64 and x86_64");
  } finally {
    await Deno.remove(workDir, { recursive: true });
  }
}
