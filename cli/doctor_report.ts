/**
 * What `surfaceport doctor` reports: a list of checks, each with a stable
 * id (docs/macos.md names the id that confirms each assumption), a status,
 * one line of detail and the raw facts it was judged on.
 *
 * @module
 */

/**
 * `ok` / `failed`: something surfaceport needs works or does not.
 * `confirmed` / `refuted`: an assumption the macOS backend was written on
 * (docs/macos.md, "What only a Mac can tell") held or did not.
 * `not-run`: could not be checked here; `detail` says why.
 */
export type CheckStatus = "ok" | "failed" | "confirmed" | "refuted" | "not-run";

/** One line of the report. */
export interface Check {
  /** Stable id, e.g. `linux.memfd-seals`, `macos.inuse.port`. */
  id: string;
  /** The outcome. */
  status: CheckStatus;
  /** What was seen, in one line. */
  detail: string;
  /** The values it was judged on (for the JSON report). */
  facts?: Record<string, unknown>;
}

/** The whole report. */
export interface DoctorReport {
  /** The package version. */
  surfaceport: string;
  /** Runtime, versions, OS, architecture, kernel. */
  runtime: Record<string, string>;
  /** The checks, in the order run. */
  checks: Check[];
}

/** True if nothing failed or was refuted. */
export function healthy(report: DoctorReport): boolean {
  return report.checks.every((c) => c.status !== "failed" && c.status !== "refuted");
}

/** The report as text, one check per line, for pasting into an issue. */
export function formatReport(report: DoctorReport): string {
  const runtime = Object.entries(report.runtime).map(([k, v]) => `${k} ${v}`).join(", ");
  const width = Math.max(...report.checks.map((c) => c.id.length));
  const lines = report.checks.map((c) =>
    `${`[${c.status}]`.padEnd(11)} ${c.id.padEnd(width)}  ${c.detail}`
  );
  const failed = report.checks.filter((c) => c.status === "failed" || c.status === "refuted");
  return [
    `surfaceport doctor: surfaceport ${report.surfaceport}; ${runtime}`,
    ...lines,
    failed.length
      ? `${failed.length} check(s) failed or refuted: please paste this report into an issue`
      : "all checks passed (paste this report into an issue if something still misbehaves)",
    "",
  ].join("\n");
}

/** Runs `probe`, turning a throw into a `failed` check with the error's text. */
export function probe(id: string, run: () => Omit<Check, "id">): Check {
  try {
    return { id, ...run() };
  } catch (error) {
    return { id, status: "failed", detail: errorText(error) };
  }
}

/** `probe` for async checks. */
export async function probeAsync(
  id: string,
  run: () => Promise<Omit<Check, "id">>,
): Promise<Check> {
  try {
    return { id, ...await run() };
  } catch (error) {
    return { id, status: "failed", detail: errorText(error) };
  }
}

/** `Name: message` of an error. */
export function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
