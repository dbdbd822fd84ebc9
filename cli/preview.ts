/**
 * `surfaceport preview NAME [--port N]`: serves a page on 127.0.0.1 that
 * shows the live stream. Frames are converted to RGBA here (downscaled to
 * at most `--max-width` pixels wide) and pushed over a WebSocket, one in
 * flight at a time: the page asks for the next one after drawing, so a slow
 * page never makes frames pile up, and the stream's own numbers (frames/s,
 * latency, drops) are measured on every received frame regardless.
 *
 * @module
 */

import { type Frame, TimeoutError, toRGBA } from "../mod.ts";
import {
  type Command,
  type CommandIO,
  integerOption,
  parseCommandArgs,
  UsageError,
} from "./command.ts";
import { PREVIEW_PAGE } from "./preview_page.ts";
import { isEndOfStream, listEndpoints, openStream, type Stream } from "./source.ts";
import { metaText, StreamStats } from "./stats.ts";

interface PreviewOptions {
  maxWidth: number;
  maxFps: number;
}

/** The output size for a `width` x `height` frame at most `maxWidth` wide. */
export function previewSize(width: number, height: number, maxWidth: number): [number, number] {
  if (width <= maxWidth) return [width, height];
  return [maxWidth, Math.max(1, Math.round((height * maxWidth) / width))];
}

/**
 * The page shows private frames, and any web page the user visits can open
 * a WebSocket to 127.0.0.1 (WebSockets are not bound by the same-origin
 * policy) or rebind a domain name of its own to 127.0.0.1. So only requests
 * addressed to this server by its loopback name are served, and a WebSocket
 * only from a page of this server (its `Origin`).
 */
export function refuseForeign(request: Request, url: URL, port: number): Response | undefined {
  const host = request.headers.get("host") ?? "";
  const own = [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
  if (!own.includes(host)) {
    return new Response(`refused: Host ${JSON.stringify(host)} is not this preview server`, {
      status: 403,
    });
  }
  const origin = request.headers.get("origin");
  if (url.pathname === "/ws" && origin !== `http://${host}`) {
    return new Response(`refused: a WebSocket from ${origin ?? "no origin"}`, { status: 403 });
  }
  return undefined;
}

/** Streams `name` to one page over `socket` until either side goes. */
function session(socket: WebSocket, name: string, options: PreviewOptions, io: CommandIO): void {
  const done = new AbortController();
  const abort = () => done.abort();
  io.signal.addEventListener("abort", abort, { once: true });
  let credits = 1;
  let lastSent = 0;
  const encoder = new TextEncoder();
  const sendText = (value: unknown) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(value));
  };
  socket.onmessage = (event) => {
    if (event.data === "ready") credits = Math.min(credits + 1, 2);
  };
  socket.onclose = abort;
  const run = async () => {
    await new Promise<void>((resolve) => {
      if (socket.readyState === WebSocket.OPEN) resolve();
      else socket.addEventListener("open", () => resolve(), { once: true });
    });
    let stream: Stream;
    try {
      stream = await openStream(name, { timeout: 5000, signal: done.signal });
    } catch (error) {
      if (!done.signal.aborted) {
        sendText({ error: `cannot open ${name}: ${(error as Error).message}` });
        socket.close();
      }
      return;
    }
    try {
      sendText({ producer: stream.producer ? `pid ${stream.producer.pid}` : "?" });
      const stats = new StreamStats();
      let rgba = new Uint8Array(0);
      for (;;) {
        let frame: Frame;
        try {
          frame = await stream.receive({ timeout: 500, signal: done.signal });
        } catch (error) {
          if (error instanceof TimeoutError) {
            stats.extraDrops = stream.dropped;
            sendText({
              stats: { ...stats.report(500), metaText: metaText(stats.report(500).meta) },
            });
            continue;
          }
          if (isEndOfStream(error)) sendText({ ended: true });
          return;
        }
        try {
          stats.add(frame);
          const now = performance.now();
          if (credits > 0 && now - lastSent >= 1000 / options.maxFps) {
            credits--;
            lastSent = now;
            const { width, height } = frame.surface;
            const [w, h] = previewSize(width, height, options.maxWidth);
            if (rgba.length !== w * h * 4) rgba = new Uint8Array(w * h * 4);
            toRGBA(frame, { into: rgba, width: w, height: h });
            stats.extraDrops = stream.dropped;
            const report = stats.report(500);
            const header = encoder.encode(JSON.stringify({
              width: w,
              height: h,
              stats: { ...report, metaText: metaText(report.meta) },
            }));
            const message = new Uint8Array(4 + header.length + rgba.length);
            new DataView(message.buffer).setUint32(0, header.length, true);
            message.set(header, 4);
            message.set(rgba, 4 + header.length);
            if (socket.readyState === WebSocket.OPEN) socket.send(message);
          }
        } finally {
          frame.close();
        }
      }
    } finally {
      stream.close();
    }
  };
  run().catch((error) => sendText({ error: String(error) })).finally(() => {
    io.signal.removeEventListener("abort", abort);
  });
}

/** `preview NAME [--port N] [--max-width W] [--max-fps N]`. */
export const preview: Command = {
  summary: "a live view of a stream in the browser (serves 127.0.0.1)",
  usage: [
    "usage: surfaceport preview [NAME] [--port N] [--max-width W] [--max-fps N]",
    "",
    "Serves a page on http://127.0.0.1:N/ that shows NAME live with its frames/s,",
    "latency, drops and the producer's pool as this consumer sees it; the page can",
    "switch to any name `surfaceport list` shows. Ends on Ctrl-C.",
    "  --port N       port to listen on (default 8470; 0 picks a free one)",
    "  --max-width W  downscale frames wider than W pixels for the page (default 960)",
    "  --max-fps N    send the page at most N frames per second (default 30)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      port: "string",
      "max-width": "string",
      "max-fps": "string",
    });
    if (positionals.length > 1) throw new UsageError("preview takes at most one NAME");
    const initial = positionals[0] ?? "";
    const port = integerOption(values, "port", 8470, 65535);
    const options = {
      maxWidth: Math.max(16, integerOption(values, "max-width", 960, 32768)),
      maxFps: Math.max(1, integerOption(values, "max-fps", 30, 1000)),
    };
    const listening = Promise.withResolvers<number>();
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port,
      signal: io.signal,
      onListen: (address) => listening.resolve(address.port),
    }, async (request) => {
      const url = new URL(request.url);
      const refusal = refuseForeign(request, url, await listening.promise);
      if (refusal) return refusal;
      if (url.pathname === "/") {
        if (!url.searchParams.has("name") && initial) {
          return Response.redirect(new URL(`/?name=${encodeURIComponent(initial)}`, url), 302);
        }
        return new Response(PREVIEW_PAGE, {
          headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
        });
      }
      if (url.pathname === "/api/list") return Response.json(await listEndpoints());
      if (url.pathname === "/ws") {
        const name = url.searchParams.get("name");
        if (!name || request.headers.get("upgrade") !== "websocket") {
          return new Response("a WebSocket with ?name=NAME", { status: 400 });
        }
        const { socket, response } = Deno.upgradeWebSocket(request);
        socket.binaryType = "arraybuffer";
        session(socket, name, options, io);
        return response;
      }
      return new Response("not found", { status: 404 });
    });
    const actual = await listening.promise;
    await io.out(
      `preview: http://127.0.0.1:${actual}/${
        initial ? `?name=${encodeURIComponent(initial)}` : ""
      }  (Ctrl-C to stop)\n`,
    );
    await server.finished;
    return 0;
  },
};
