/**
 * Where each FFI symbol of `ffi/darwin.ts` is exported from, for the SDK
 * facts: the SDK's framework `.tbd` stubs (CoreFoundation, IOSurface,
 * CoreVideo), the shared `../shared/macos/libsystem-exports.txt` and this
 * repository's supplement to it ({@link LIBSYSTEM_SUPPLEMENT_PATH}).
 * `tools/sdk_facts_extract.ts` puts the result in the facts file's
 * `exports`.
 *
 * @module
 */

import { ARCHITECTURES, type ExportFact, ffiSymbolNames } from "./sdk_facts_lib.ts";

/**
 * The libSystem exports this repository needs beyond the shared
 * `libsystem-exports.txt` (same format; relative to the repository root).
 */
export const LIBSYSTEM_SUPPLEMENT_PATH = "native/libsystem-exports-local.txt";

/** One line of a `libsystem-exports.txt`: where Apple's stubs say a symbol is exported. */
export interface LibsystemExport {
  /** The install name of the exporting library. */
  library: string;
  /** The stub it was read from: `MacOSX….sdk/….tbd@COMMIT` (phracker/MacOSX-SDKs). */
  source: string;
}

/**
 * Parses a `libsystem-exports.txt` (symbol, install name, source; tab
 * separated; `#` comments): symbol → where it is exported. Throws, naming
 * `file` and the line, on anything else — a wrong field count, a library
 * outside libSystem's sub-libraries and libbsm, a source that is not a
 * stub path at a commit, a symbol listed twice.
 */
export function parseLibsystemExports(text: string, file: string): Map<string, LibsystemExport> {
  const out = new Map<string, LibsystemExport>();
  text.split("\n").forEach((line, i) => {
    if (line.startsWith("#") || line.trim() === "") return;
    const fields = line.split("\t");
    const [symbol, library, source] = fields;
    const problem = fields.length !== 3
      ? `${fields.length} tab-separated fields, not 3`
      : !/^(_\w+|dyld_stub_binder)$/.test(symbol)
      ? `${JSON.stringify(symbol)} is not a C symbol`
      : !/^\/usr\/lib\/(system\/\w+|libbsm\.0)\.dylib$/.test(library)
      ? `${library} is neither a libSystem sub-library nor libbsm`
      : !/^MacOSX[\d.]+\.sdk\/\S+\.tbd@[0-9a-f]{40}$/.test(source)
      ? `${JSON.stringify(source)} is not SDK.sdk/PATH.tbd@COMMIT`
      : out.has(symbol)
      ? `${symbol} listed twice`
      : undefined;
    if (problem) throw new Error(`${file}:${i + 1}: ${problem}`);
    out.set(symbol, { library, source });
  });
  return out;
}

/**
 * The shared exports and the repository's supplement, each symbol with the
 * file that lists it; throws if the supplement repeats a shared symbol
 * (it only adds).
 */
export function mergeLibsystemExports(
  shared: { file: string; text: string },
  supplement: { file: string; text: string },
): Map<string, LibsystemExport & { file: string }> {
  const out = new Map<string, LibsystemExport & { file: string }>();
  for (const { file, text } of [shared, supplement]) {
    for (const [symbol, fact] of parseLibsystemExports(text, file)) {
      const earlier = out.get(symbol);
      if (earlier) throw new Error(`${file}: ${symbol} is already in ${earlier.file}`);
      out.set(symbol, { ...fact, file });
    }
  }
  return out;
}

/** Parses the export lists of a `.tbd` (v4) file: symbol → [install name, targets]. */
export function parseTbd(text: string): Map<string, { library: string; targets: string[] }> {
  const out = new Map<string, { library: string; targets: string[] }>();
  // Join bracketed lists that span lines.
  const flat = text.replace(
    /\[([^\]]*)\]/g,
    (_, inner: string) => `[${inner.replace(/\s+/g, " ")}]`,
  );
  for (const document of flat.split(/^--- /m)) {
    const library = /^install-name:\s*'?([^'\n]+)'?/m.exec(document)?.[1];
    if (!library) continue;
    let section = "";
    let targets: string[] = [];
    for (const line of document.split("\n")) {
      const key = /^([a-z-]+):/.exec(line);
      if (key) {
        section = key[1];
        continue;
      }
      const t = /^\s*-?\s*targets:\s*\[([^\]]*)\]/.exec(line);
      if (t) targets = t[1].split(",").map((s) => s.trim()).filter(Boolean);
      const s = /^\s+symbols:\s*\[([^\]]*)\]/.exec(line);
      if (s && (section === "exports" || section === "reexports")) {
        for (const symbol of s[1].split(",").map((x) => x.trim().replace(/^'|'$/g, ""))) {
          if (symbol && !out.has(symbol)) out.set(symbol, { library, targets });
        }
      }
    }
  }
  return out;
}

/** The export lists {@link exportFacts} reads. */
export interface ExportSources {
  /** The SDK directory (include/, Frameworks/). */
  sdk: string;
  /** `libsystem-exports.txt`. */
  libsystemExports: string;
  /** The supplement (default: {@link LIBSYSTEM_SUPPLEMENT_PATH} of this checkout). */
  libsystemSupplement?: string;
}

/** The exporting library of every FFI symbol, keyed by the C name (`_name`). */
export async function exportFacts(
  options: ExportSources,
): Promise<Record<string, ExportFact>> {
  const sources: { file: string; exports: Map<string, { library: string; targets: string[] }> }[] =
    [];
  for (const framework of ["CoreFoundation", "IOSurface", "CoreVideo"]) {
    const file = `${options.sdk}/Frameworks/${framework}.framework/${framework}.tbd`;
    sources.push({
      file: `Frameworks/${framework}.framework/${framework}.tbd`,
      exports: parseTbd(await Deno.readTextFile(file)),
    });
  }
  const supplement = options.libsystemSupplement ??
    new URL(`../${LIBSYSTEM_SUPPLEMENT_PATH}`, import.meta.url).pathname;
  const libsystem = mergeLibsystemExports(
    {
      file: "../shared/macos/libsystem-exports.txt",
      text: await Deno.readTextFile(options.libsystemExports),
    },
    { file: LIBSYSTEM_SUPPLEMENT_PATH, text: await Deno.readTextFile(supplement) },
  );
  for (const file of new Set([...libsystem.values()].map((fact) => fact.file))) {
    const exports = new Map<string, { library: string; targets: string[] }>();
    for (const [symbol, fact] of libsystem) {
      // Both files state every symbol sits in an export block for both architectures.
      if (fact.file === file) {
        exports.set(symbol, { library: fact.library, targets: ["x86_64-macos", "arm64-macos"] });
      }
    }
    sources.push({ file, exports });
  }

  const out: Record<string, ExportFact> = {};
  for (const name of ffiSymbolNames()) {
    const symbol = `_${name}`;
    const hit = sources.find((s) => s.exports.has(symbol));
    const entry = hit?.exports.get(symbol);
    out[symbol] = {
      library: entry?.library ?? null,
      architectures: ARCHITECTURES.filter((a) => entry?.targets.includes(`${a}-macos`)),
      source: hit?.file ?? null,
    };
  }
  return out;
}
