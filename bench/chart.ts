/**
 * The latency-versus-frame-size chart of `bench/run.ts`, as a self-contained
 * SVG (log-log axes), made from the results alone.
 *
 * @module
 */

/** One line of the chart: a latency in microseconds per frame size key. */
export interface Series {
  label: string;
  color: string;
  dashed?: boolean;
  points: Record<string, number>;
}

const WIDTH = 760;
const HEIGHT = 440;
const LEFT = 70;
const RIGHT = 200;
const TOP = 40;
const BOTTOM = 60;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** An SVG chart of `series` over `sizes` ("WxH" keys with their byte counts). */
export function latencyChart(
  title: string,
  subtitle: string,
  sizes: { key: string; bytes: number }[],
  series: Series[],
): string {
  const values = series.flatMap((s) => Object.values(s.points)).filter((v) => v > 0);
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const xMin = Math.log10(sizes[0].bytes / 1.6);
  const xMax = Math.log10(sizes[sizes.length - 1].bytes * 1.6);
  const plotW = WIDTH - LEFT - RIGHT;
  const plotH = HEIGHT - TOP - BOTTOM;
  const x = (bytes: number) => LEFT + ((Math.log10(bytes) - xMin) / (xMax - xMin)) * plotW;
  const y = (us: number) =>
    TOP + plotH - ((Math.log10(us) - Math.log10(yMin)) / (Math.log10(yMax / yMin))) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" ` +
      `viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${LEFT}" y="18" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="${LEFT}" y="33" fill="#555">${escape(subtitle)}</text>`,
  );
  for (let decade = yMin; decade <= yMax; decade *= 10) {
    const label = decade >= 1000 ? `${decade / 1000} ms` : `${decade} µs`;
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y(decade)}" y2="${y(decade)}" stroke="#ddd"/>`,
      `<text x="${LEFT - 6}" y="${y(decade) + 4}" text-anchor="end">${label}</text>`,
    );
  }
  for (const size of sizes) {
    const mb = (size.bytes / 1e6).toFixed(size.bytes < 1e7 ? 1 : 0);
    out.push(
      `<line x1="${x(size.bytes)}" x2="${x(size.bytes)}" y1="${TOP}" y2="${
        TOP + plotH
      }" stroke="#eee"/>`,
      `<text x="${x(size.bytes)}" y="${TOP + plotH + 18}" text-anchor="middle">${size.key}</text>`,
      `<text x="${x(size.bytes)}" y="${TOP + plotH + 32}" text-anchor="middle" fill="#555">` +
        `${mb} MB</text>`,
    );
  }
  out.push(
    `<rect x="${LEFT}" y="${TOP}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`,
    `<text x="${LEFT + plotW / 2}" y="${HEIGHT - 8}" text-anchor="middle">` +
      "frame size (BGRA), log scale</text>",
    `<text transform="translate(16 ${TOP + plotH / 2}) rotate(-90)" text-anchor="middle">` +
      "p50 latency per frame, log scale</text>",
  );
  series.forEach((s, index) => {
    const points = sizes.filter((size) => s.points[size.key] > 0)
      .map((size) => [x(size.bytes), y(s.points[size.key])]);
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    out.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${
        points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ")
      }"/>`,
    );
    for (const [px, py] of points) {
      out.push(`<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    }
    const ly = TOP + 10 + index * 20;
    out.push(
      `<line x1="${LEFT + plotW + 12}" x2="${LEFT + plotW + 36}" y1="${ly}" y2="${ly}" ` +
        `stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${LEFT + plotW + 42}" y="${ly + 4}">${escape(s.label)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
