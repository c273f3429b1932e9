import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { inflateSync } from 'node:zlib';
import { plotFont, writeLinePlot, writeLossPlot } from '../../src/train/plot.ts';
import { UsageError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'tnl-plot-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width, height and the RGBA rows of an 8-bit RGBA, non-interlaced PNG (what resvg writes). */
function decodePng(buf: Buffer): { width: number; height: number; pixel: (x: number, y: number) => number[] } {
  assert.deepEqual([...buf.subarray(0, 8)], PNG_SIGNATURE);
  let off = 8;
  let width = 0;
  let height = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth');
      assert.equal(data[9], 6, 'colour type RGBA');
      assert.equal(data[12], 0, 'not interlaced');
    }
    if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 4;
  const px = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= 4 ? px[y * stride + i - 4] : 0;
      const b = y > 0 ? px[(y - 1) * stride + i] : 0;
      const c = i >= 4 && y > 0 ? px[(y - 1) * stride + i - 4] : 0;
      let v = line[i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      px[y * stride + i] = v & 255;
    }
  }
  return { width, height, pixel: (x, y) => [...px.subarray(y * stride + x * 4, y * stride + x * 4 + 4)] };
}

test('loss plot: a PNG and an SVG, with text drawn', async () => {
  const train = Array.from({ length: 200 }, (_, i) => ({ step: i, loss: 6 * Math.exp(-i / 50) + 2 + 0.1 * Math.sin(i) }));
  const val = [0, 50, 100, 150, 199].map((step) => ({ step, loss: 6 * Math.exp(-step / 50) + 2.3 }));
  train[10].loss = NaN; // a diverged step must not break the plot
  const out = await writeLossPlot(join(dir, 'loss.png'), { train, val }, { smooth: 0.9 });
  assert.deepEqual(out, { png: join(dir, 'loss.png'), svg: join(dir, 'loss.svg') });
  const png = readFileSync(out.png);
  assert.ok(png.length > 20_000, `PNG of ${png.length} bytes`);
  const img = decodePng(png);
  assert.ok(img.width >= 1200 && img.height >= 700, `${img.width}×${img.height}`);
  assert.deepEqual(img.pixel(2, 2), [255, 255, 255, 255], 'white background');
  const svg = readFileSync(out.svg, 'utf8');
  assert.ok(svg.startsWith('<svg'));
  for (const label of ['Loss', 'step', 'loss', 'train', 'val', 'train (smoothed)']) assert.ok(svg.includes(`>${label}</text>`), `SVG text ${label}`);
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('.')), [], 'no temporary files left');

  if (!plotFont()) {
    console.log('# no known font on this machine: PNG text not checked');
    return;
  }
  // The title "Loss" is centred above the plot: the band at the top holds dark (text) pixels.
  let dark = 0;
  for (let y = 0; y < 70; y++)
    for (let x = Math.floor(img.width * 0.3); x < img.width * 0.6; x++) {
      const [r, g, b] = img.pixel(x, y);
      if (r + g + b < 200) dark++;
    }
  assert.ok(dark > 100, `${dark} dark pixels in the title band`);
});

test('line plot: log axes, several series; bad paths refused', async () => {
  const sizes = [64, 128, 256, 512, 1024];
  const out = await writeLinePlot(join(dir, 'bench.png'), {
    title: 'Throughput',
    xLabel: 'size',
    yLabel: 'GFLOP/s',
    logX: true,
    logY: true,
    points: true,
    series: { cpu: sizes.map((x, i) => ({ x, y: 10 * (i + 1) })), reference: sizes.map((x, i) => ({ x, y: 1 + i / 10 })), empty: [] },
  });
  const png = readFileSync(out.png);
  assert.deepEqual([...png.subarray(0, 8)], PNG_SIGNATURE);
  assert.ok(png.length > 10_000);
  assert.ok(existsSync(out.svg));
  await assert.rejects(writeLinePlot(join(dir, 'plot.jpg'), { title: 't', xLabel: 'x', yLabel: 'y', series: {} }), UsageError);
});
