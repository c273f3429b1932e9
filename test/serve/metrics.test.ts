// Prometheus exposition written by hand: the text parses, histograms are cumulative, labels escape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Gauge, Histogram, RateWindow, Registry, parsePrometheus } from '../../src/serve/metrics.ts';

test('counters, gauges and histograms render as Prometheus text', () => {
  const r = new Registry();
  const c = r.add(new Counter('x_requests_total', 'requests'));
  c.inc(); c.inc(2, { route: '/a', status: '200' }); c.inc(1, { route: 'we"ird\\', status: '500' });
  r.add(new Gauge('x_depth', 'depth', () => 7));
  const h = r.add(new Histogram('x_latency_seconds', 'latency', [0.1, 1, 0.5]));
  for (const v of [0.05, 0.2, 0.7, 3, 0.1]) h.observe(v);
  const text = r.render();
  assert.match(text, /# TYPE x_requests_total counter/);
  assert.match(text, /# TYPE x_latency_seconds histogram/);
  const m = parsePrometheus(text);
  assert.equal(m.get('x_requests_total'), 1);
  assert.equal(m.get('x_requests_total{route="/a",status="200"}'), 2);
  assert.equal(m.get('x_requests_total{route="we\\"ird\\\\",status="500"}'), 1);
  assert.equal(m.get('x_depth'), 7);
  // buckets sorted and cumulative: ≤0.1 holds 0.05 and 0.1; ≤0.5 adds 0.2; ≤1 adds 0.7; +Inf all 5
  assert.equal(m.get('x_latency_seconds_bucket{le="0.1"}'), 2);
  assert.equal(m.get('x_latency_seconds_bucket{le="0.5"}'), 3);
  assert.equal(m.get('x_latency_seconds_bucket{le="1"}'), 4);
  assert.equal(m.get('x_latency_seconds_bucket{le="+Inf"}'), 5);
  assert.equal(m.get('x_latency_seconds_count'), 5);
  assert.ok(Math.abs(m.get('x_latency_seconds_sum')! - 4.05) < 1e-12);
  assert.throws(() => r.add(new Counter('x_depth', 'dup')), /twice/);
});

test('RateWindow: events per second over the window', () => {
  let now = 100_000;
  const w = new RateWindow(10, () => now);
  for (let s = 0; s < 20; s++) { w.add(50); now += 1000; }
  // 50 per second steadily: the estimate is 50/s within a bin's rounding
  assert.ok(Math.abs(w.rate() - 50) < 6, `rate ${w.rate()}`);
  now += 60_000; // quiet for a minute
  assert.equal(w.rate(), 0);
});
