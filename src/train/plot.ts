// Line plots as PNG (and SVG beside it): a vega-lite spec, compiled to vega, rendered headless to
// SVG, rasterised by resvg. Used for loss curves and for benchmark figures.
import { existsSync } from 'node:fs';
import { compile, type TopLevelSpec } from 'vega-lite';
import * as vega from 'vega';
import { Resvg } from '@resvg/resvg-js';
import { UsageError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';

export interface Point {
  x: number;
  y: number;
}

export interface LinePlot {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Named series, drawn in this order (and coloured in it). Non-finite points are left out. */
  series: Record<string, Point[]>;
  /** Logarithmic y axis (points with y ≤ 0 are left out). */
  logY?: boolean;
  /** Logarithmic x axis (points with x ≤ 0 are left out). */
  logX?: boolean;
  /** Mark the data points: on every series (true), none (false, default) or the named series. */
  points?: boolean | readonly string[];
  /** Size of the plotting area in pixels (default 640 × 360); the PNG adds axes and legend. */
  width?: number;
  height?: number;
  /** PNG pixels per SVG pixel (default 2, for a sharp image). */
  scale?: number;
}

export interface PlotFiles {
  png: string;
  svg: string;
}

interface FontChoice {
  family: string;
  files: string[];
}

// Fonts resvg can render text with: the first family found wins. Debian/Ubuntu ship DejaVu.
const FONT_CANDIDATES: FontChoice[] = [
  { family: 'DejaVu Sans', files: ['/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf'] },
  { family: 'DejaVu Sans', files: ['/usr/share/fonts/TTF/DejaVuSans.ttf', '/usr/share/fonts/TTF/DejaVuSans-Bold.ttf'] },
  { family: 'DejaVu Sans', files: ['/usr/share/fonts/dejavu/DejaVuSans.ttf', '/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf'] },
  { family: 'Liberation Sans', files: ['/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf', '/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf'] },
  { family: 'Noto Sans', files: ['/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf', '/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf'] },
  { family: 'Arial', files: ['/System/Library/Fonts/Supplemental/Arial.ttf', '/System/Library/Fonts/Supplemental/Arial Bold.ttf'] },
  { family: 'Arial', files: ['C:\\Windows\\Fonts\\arial.ttf', 'C:\\Windows\\Fonts\\arialbd.ttf'] },
];

let fontChoice: FontChoice | null | undefined;
let warnedNoFont = false;

/**
 * The font plots are drawn with: a known font file on this machine, or null when none of the
 * candidates exists (then resvg falls back to whatever system fonts it finds, if any; with none,
 * the PNG has no text, and a warning says so once).
 */
export function plotFont(): FontChoice | null {
  if (fontChoice === undefined) {
    fontChoice = null;
    for (const c of FONT_CANDIDATES) {
      const files = c.files.filter((f) => existsSync(f));
      if (files.length && existsSync(c.files[0])) {
        fontChoice = { family: c.family, files };
        break;
      }
    }
  }
  return fontChoice;
}

function cleanSeries(points: readonly Point[], logX: boolean, logY: boolean): Point[] {
  return points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!logX || p.x > 0) && (!logY || p.y > 0));
}

/** The vega-lite spec of a line plot (exported for tests and for writing specs elsewhere). */
export function linePlotSpec(plot: LinePlot, fontFamily = plotFont()?.family ?? 'sans-serif'): TopLevelSpec {
  const names = Object.keys(plot.series);
  const logX = !!plot.logX;
  const logY = !!plot.logY;
  const values: { series: string; x: number; y: number }[] = [];
  for (const name of names) for (const p of cleanSeries(plot.series[name], logX, logY)) values.push({ series: name, x: p.x, y: p.y });
  const pointNames = plot.points === true ? names : plot.points === false || plot.points === undefined ? [] : names.filter((n) => (plot.points as readonly string[]).includes(n));
  const color = {
    field: 'series',
    type: 'nominal' as const,
    title: null,
    scale: { domain: names },
    legend: names.length > 1 ? { orient: 'right' as const } : null,
  };
  const x = { field: 'x', type: 'quantitative' as const, title: plot.xLabel, scale: logX ? { type: 'log' as const, nice: false, padding: 8 } : { zero: false } };
  const y = { field: 'y', type: 'quantitative' as const, title: plot.yLabel, scale: logY ? { type: 'log' as const } : { zero: false } };
  const layers: any[] = [{ mark: { type: 'line', strokeWidth: 1.6, clip: true }, encoding: { x, y, color, order: { field: 'x', type: 'quantitative' } } }];
  if (pointNames.length)
    layers.push({
      transform: [{ filter: { field: 'series', oneOf: pointNames } }],
      mark: { type: 'point', filled: true, size: 28, opacity: 1 },
      encoding: { x, y, color },
    });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: plot.title,
    width: plot.width ?? 640,
    height: plot.height ?? 360,
    background: 'white',
    padding: 12,
    data: { values },
    layer: layers,
    config: {
      font: fontFamily,
      title: { fontSize: 15 },
      axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
      legend: { labelFontSize: 11 },
      view: { stroke: '#999' },
    },
  } as TopLevelSpec;
}

/** Render a vega-lite spec to SVG text (headless, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vg = compile(spec).spec;
  const view = new vega.View(vega.parse(vg), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Rasterise SVG text to PNG bytes with resvg, using the plot font. */
export function svgToPng(svg: string, scale = 2): Uint8Array {
  const font = plotFont();
  if (!font && !warnedNoFont) {
    warnedNoFont = true;
    process.emitWarning('plot: no known font file (DejaVu Sans, Liberation Sans, Noto Sans, Arial) found; text in PNG plots may be missing');
  }
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: font
      ? { loadSystemFonts: false, fontFiles: font.files, defaultFontFamily: font.family, sansSerifFamily: font.family }
      : { loadSystemFonts: true },
    logLevel: 'off',
  });
  return resvg.render().asPng();
}

function svgPathFor(pngPath: string): string {
  if (!/\.png$/i.test(pngPath)) throw new UsageError(`plot: the output must be a .png file, got ${pngPath}`);
  return pngPath.replace(/\.png$/i, '.svg');
}

/** Write a line plot to `pngPath` and its SVG beside it (same name, .svg), each atomically. */
export async function writeLinePlot(pngPath: string, plot: LinePlot): Promise<PlotFiles> {
  const svgPath = svgPathFor(pngPath);
  for (const [name, pts] of Object.entries(plot.series))
    if (!Array.isArray(pts)) throw new UsageError(`plot "${plot.title}": series "${name}" must be an array of {x, y}`);
  const svg = await renderSvg(linePlotSpec(plot));
  const png = svgToPng(svg, plot.scale ?? 2);
  writeFileAtomic(svgPath, svg);
  writeFileAtomic(pngPath, png);
  return { png: pngPath, svg: svgPath };
}

export interface LossPoint {
  step: number;
  loss: number;
}

export interface LossPlotOptions {
  title?: string;
  logY?: boolean;
  /** Also draw an exponential moving average of the train loss with this weight on the past
   *  (e.g. 0.9); 0 or absent: none. */
  smooth?: number;
  width?: number;
  height?: number;
}

/** Loss against step: the train curve, and the val losses as marked points on their own line. */
export async function writeLossPlot(pngPath: string, series: { train: LossPoint[]; val?: LossPoint[] }, opts: LossPlotOptions = {}): Promise<PlotFiles> {
  const toXY = (pts: LossPoint[]) => pts.map((p) => ({ x: p.step, y: p.loss }));
  const s: Record<string, Point[]> = { train: toXY(series.train) };
  const smooth = opts.smooth ?? 0;
  if (!(smooth >= 0 && smooth < 1)) throw new UsageError(`plot: smooth must be in [0, 1), got ${smooth}`);
  if (smooth > 0) {
    let ema: number | null = null;
    s['train (smoothed)'] = [];
    for (const p of series.train) {
      if (!Number.isFinite(p.loss)) continue;
      ema = ema === null ? p.loss : smooth * ema + (1 - smooth) * p.loss;
      s['train (smoothed)'].push({ x: p.step, y: ema });
    }
  }
  if (series.val) s.val = toXY(series.val);
  return writeLinePlot(pngPath, {
    title: opts.title ?? 'Loss',
    xLabel: 'step',
    yLabel: 'loss',
    series: s,
    logY: opts.logY,
    points: ['val'],
    width: opts.width,
    height: opts.height,
  });
}
