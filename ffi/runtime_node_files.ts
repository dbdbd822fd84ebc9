/**
 * The seam's file operations, environment and host facts over `node:fs`
 * and `process`: shared by Node and Bun.
 *
 * @module
 */

import * as fs from "node:fs";
import process from "node:process";
import type { FileInfo, RuntimeFiles } from "./runtime.ts";

function fileInfo(info: fs.Stats): FileInfo {
  return {
    isDirectory: info.isDirectory(),
    isFile: info.isFile(),
    uid: info.uid,
    mode: info.mode,
    mtimeMs: info.mtimeMs,
  };
}

/** Node's permission model (`--permission`), when it is on. */
interface Permission {
  has(scope: string, reference?: string): boolean;
}

/** `process.permission` when Node runs with `--permission`, else `undefined`. */
export function nodePermission(): Permission | undefined {
  return (process as unknown as { permission?: Permission }).permission;
}

/** The file operations through `node:fs` (asking Node's permission model where it is on). */
export const nodeFiles: RuntimeFiles = {
  mayAccess(kind, path) {
    const permission = nodePermission();
    return permission === undefined || permission.has(`fs.${kind}`, path);
  },
  makeDirectory(path, mode) {
    try {
      fs.mkdirSync(path, { mode });
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === "EEXIST") return false;
      throw error;
    }
  },
  lstat: (path) => fileInfo(fs.lstatSync(path)),
  stat: (path) => fileInfo(fs.statSync(path)),
  remove: (path) => fs.lstatSync(path).isDirectory() ? fs.rmdirSync(path) : fs.unlinkSync(path),
  writeTextFile: (path, text, mode) => fs.writeFileSync(path, text, { mode }),
  rename: (from, to) => fs.renameSync(from, to),
  readDirectory: (path) =>
    fs.readdirSync(path, { withFileTypes: true }).map((entry) => ({
      name: entry.name,
      isFile: entry.isFile(),
    })),
  readTextFile: (path) => fs.readFileSync(path, "utf8"),
  readFile: async (path) => new Uint8Array(await fs.promises.readFile(path)),
};

/** `process.arch` as Deno names it. */
export function archName(): string {
  return process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch;
}

/** `process.platform` (already Deno's names for Linux and macOS). */
export function osName(): string {
  return process.platform;
}

/** An environment variable. */
export function envValue(name: string): string | undefined {
  return process.env[name];
}

/** This process's id. */
export const pid: number = process.pid;
